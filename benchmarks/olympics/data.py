"""The olympics purchase workload, its exact expected final state, and a dump of a server's state.

Orders are generated from a fixed seed, so every contender processes the same purchases and the
final Redis state of each can be compared with the expected one, and so with each other.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis

from benchmarks.resp import encode

EVENTS = {"Womens Judo": 20, "Mens 4x400": 30, "Opening Ceremony": 120, "Closing Ceremony": 100}  # price
ORDERS = "purchase_orders"
EPOCH = 1_595_548_800  # 2020-07-24 00:00 UTC, the opening day
HOURS = 24


@dataclass(frozen=True)
class Order:
    id: str
    who: str
    event: str
    qty: int
    cost: int  # whole dollars, so HINCRBYFLOAT sums are exact and comparable
    ts: int

    def fields(self) -> dict[str, str]:
        return {"who": self.who, "event": self.event, "qty": str(self.qty), "cost": str(self.cost), "ts": str(self.ts)}


def orders(n: int, seed: int = 2020) -> list[Order]:
    rnd = random.Random(seed)
    names = list(EVENTS)
    out = []
    for i in range(n):
        event = names[rnd.randrange(len(names))]
        qty = rnd.randint(1, 9)
        out.append(
            Order(
                f"{i:07d}",
                f"customer{rnd.randrange(500)}",
                event,
                qty,
                qty * EVENTS[event],
                EPOCH + rnd.randrange(3 * 86400),
            )
        )
    return out


def store_commands(os_: list[Order]) -> Iterator[bytes]:
    """The first half of ``post_purchases``: store each order's details (not timed)."""
    for o in os_:
        yield encode("HSET", f"purchase_order_details:{o.id}", *(x for kv in o.fields().items() for x in kv))


def publish_commands(os_: list[Order]) -> Iterator[bytes]:
    """The second half: announce the order id on ``purchase_orders`` and on the event's channel."""
    for o in os_:
        yield encode("PUBLISH", ORDERS, o.id)
        yield encode("PUBLISH", f"{ORDERS}:{o.event}", o.id)


def published_channels(os_: list[Order]) -> Iterator[str]:
    for o in os_:
        yield ORDERS
        yield f"{ORDERS}:{o.event}"


def hour_utc(ts: int) -> int:
    return time.gmtime(ts).tm_hour


def expected_state(os_: list[Order]) -> dict[str, Any]:
    """What the five listeners must leave behind, in the normal form of :func:`dump_state`."""
    state: dict[str, Any] = {}
    hist: dict[str, list[int]] = defaultdict(lambda: [0] * HOURS)
    summary: dict[str, float] = defaultdict(float)
    sets: dict[str, set[str]] = defaultdict(set)
    for o in os_:
        state[f"purchase_order_details:{o.id}"] = o.fields()
        h = hour_utc(o.ts)
        hist["sales_histogram:time_of_day"][h] += o.qty
        hist[f"sales_histogram:time_of_day:{o.event}"][h] += o.qty
        sets[f"sales:{o.event}"].add(o.id)
        summary[f"{o.event}:total_sales"] += o.cost
        summary[f"{o.event}:total_tickets_sold"] += o.qty
        sets[f"invoices:{o.who}"].add(o.id)
    state.update(hist)
    state.update({k: sorted(v) for k, v in sets.items()})
    state["sales_summary"] = dict(summary)
    return state


def _u32s(raw: bytes) -> list[int]:
    # BITFIELD u32 #i is big-endian at byte offset 4*i; unwritten slots read as 0.
    raw = raw.ljust(4 * HOURS, b"\0")
    return [int.from_bytes(raw[4 * i : 4 * i + 4], "big") for i in range(HOURS)]


# Not the tutorial's state, so left out of the comparison: eventbus's operational keys (the
# histories of the purchase channels and the listeners' positions in them, the runner's
# heartbeats), and apps.olympics's record of the orders its histograms count (what keeps them
# exact when a restarted listener handles an order again).
BOOKKEEPING = ("eventbus:history", "eventbus:{heartbeat}")


def dump_state(url: str) -> dict[str, Any]:
    """Every key of the server but the bookkeeping, in a comparable normal form."""
    r = redis.Redis.from_url(url)
    keys = sorted(k.decode() for k in r.scan_iter(count=1000) if not k.decode().startswith(BOOKKEEPING))
    types = r.pipeline(transaction=False)
    for k in keys:
        types.type(k)
    values = r.pipeline(transaction=False)
    for k, t in zip(keys, types.execute(), strict=True):
        {b"hash": values.hgetall, b"set": values.smembers, b"string": values.get}.get(t, values.type)(k)
    state: dict[str, Any] = {}
    for k, v in zip(keys, values.execute(), strict=True):
        if k.startswith("sales_histogram:"):
            state[k] = _u32s(v)
        elif k == "sales_summary":
            state[k] = {f.decode(): float(x) for f, x in v.items()}
        elif isinstance(v, dict):
            state[k] = {f.decode(): x.decode() for f, x in v.items()}
        elif isinstance(v, set):
            state[k] = sorted(x.decode() for x in v)
        else:
            state[k] = v.decode(errors="replace") if isinstance(v, bytes) else v
    r.close()
    return state


def digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]


def diff(got: dict[str, Any], want: dict[str, Any], limit: int = 5) -> list[str]:
    """A few human-readable differences, for the report."""
    out = [f"missing {k}" for k in sorted(want.keys() - got.keys())]
    out += [f"unexpected {k}" for k in sorted(got.keys() - want.keys())]
    out += [f"differs {k}" for k in sorted(want.keys() & got.keys()) if want[k] != got[k]]
    return out[:limit] + ([f"... {len(out) - limit} more"] if len(out) > limit else [])
