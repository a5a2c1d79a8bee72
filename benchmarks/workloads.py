"""Payloads and the pre-encoded PUBLISH commands of each scenario."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from benchmarks.resp import encode

PAYLOAD_BYTES = 60


def json_payload(i: int) -> bytes:
    """A 60-byte JSON object shaped like the broadcast tutorial's messages."""
    base = orjson.dumps({"id": i, "from": "+12025550123", "to": "+55849912", "m": ""})
    pad = PAYLOAD_BYTES - len(base)
    if pad < 0:
        raise ValueError(f"message {i} does not fit in {PAYLOAD_BYTES} bytes")
    return base[:-2] + b"x" * pad + b'"}'


def latency_payload(ts_ns: int) -> bytes:
    """60 bytes of JSON carrying the send time (CLOCK_MONOTONIC, shared by all local processes)."""
    base = orjson.dumps({"ts": ts_ns, "m": ""})
    return base[:-2] + b"x" * max(0, PAYLOAD_BYTES - len(base)) + b'"}'


def publish_commands(channels: list[str], n: int) -> Iterator[bytes]:
    """``n`` PUBLISH commands spread round-robin over ``channels``."""
    chans = [c.encode() for c in channels]
    k = len(chans)
    for i in range(n):
        yield encode(b"PUBLISH", chans[i % k], json_payload(i))


# The fan-out workload is the olympics app's subscription layout.
ORDERS = "purchase_orders"
OPENING = "purchase_orders:Opening Ceremony"
CEREMONIES = "purchase_orders:* Ceremony"


def fanout_commands(orders: int) -> Iterator[bytes]:
    """Each order to ``purchase_orders`` and to its event's channel, as ``post_purchases`` does."""
    for i in range(orders):
        payload = json_payload(i)
        yield encode(b"PUBLISH", ORDERS, payload)
        yield encode(b"PUBLISH", OPENING, payload)
