"""Recoverable channels in process: the dispatcher's fast path and the replay, no socket, no Redis.

    PYTHONPATH=$PWD python -m benchmarks.recovery_inproc [--messages 100000] [--reps 3]

Feeds pre-built ``message`` replies (the payload of benchmarks/recovery.py; for the recoverable
channel each in its envelope, offsets 1..N of one epoch) in 64 KiB chunks, one chunk per loop turn,
through the subscription protocol to ``Dispatcher.consume``, and reports CPU µs per message (min
and median over ``--reps``, the variants interleaved):

- ``route-plain`` / ``route-rec``: routing only (the lookup, for the recoverable channel the
  offset check of ``_dispatch._in_order``, the ``Message``), to no worker;
- ``full-plain`` / ``full-rec``: through a ``HandlerWorker`` to a handler decoding the payload;
- ``replay``: the same handler fed by ``deliver_payloads`` in pages of 10,000, as a recovery does.

Run it with another checkout's interpreter (``cd OTHER && .venv/bin/python -m ...``) for a before
and after of the compiled path.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson

from benchmarks.profile_drain import CHANNEL, CHUNK, Counter, make_workers
from eventbus import Channel
from eventbus._backends.subscriber import _SubscriptionProtocol
from eventbus._dispatch import Dispatcher, deliver_payloads
from eventbus._flow import ReadGate
from eventbus._recovery import Recovery
from eventbus._stats import BusStats
from eventbus._subscription import Subscription
from eventbus._worker import HandlerWorker

EPOCH = b"1796658341142331"
PAYLOAD = orjson.dumps({"id": 123456, "event": "Opening Ceremony", "qty": 2, "cost": 123.45, "x": "ab"})
PAGE = 10_000
VARIANTS = ("route-plain", "route-rec", "full-plain", "full-rec", "replay")


def chunks(n: int, recoverable: bool) -> list[bytes]:
    ch = CHANNEL.encode()
    parts = []
    for offset in range(1, n + 1):
        data = b"\x00EB%d:%s:%s" % (offset, EPOCH, PAYLOAD) if recoverable else PAYLOAD
        parts.append(b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(ch), ch, len(data), data))
    out = b"".join(parts)
    return [out[i : i + CHUNK] for i in range(0, len(out), CHUNK)]


async def run_once(variant: str, data: list[bytes], n: int) -> float:
    recoverable = variant.endswith("rec") or variant == "replay"
    stats = BusStats()
    recovery = Recovery(None, stats, deliver_payloads=deliver_payloads)  # type: ignore[arg-type]  # never read here
    dispatcher = Dispatcher(stats, recovery=recovery)
    counter = Counter()
    workers: list[HandlerWorker] = []
    declared = Channel(CHANNEL, history=PAGE) if recoverable else None
    if variant.startswith("route"):
        dispatcher.channels[CHANNEL.encode()] = (CHANNEL, (), recoverable)
        if recoverable:
            recovery.declare("channel", CHANNEL, ())
    else:
        workers = make_workers(1, [counter], HandlerWorker)
        dispatcher.add_routes((Subscription("channel", CHANNEL, declared=declared), w) for w in workers)
        for w in workers:
            w.budget = 1 << 40  # the whole backlog fits: nothing is dropped
            w.start()
    track: Any = None
    if recoverable:
        track = next(iter(recovery.tracks.values()))
        track.epoch, track.last, track.buffer = EPOCH, 0, None  # positioned, as after start()
    await asyncio.sleep(0)
    began = time.process_time()
    if variant == "replay":
        payloads = [PAYLOAD] * PAGE
        for _ in range(n // PAGE):
            recovery.deliver_payloads(track.workers, CHANNEL, None, payloads, None)
            await asyncio.sleep(0)
    else:
        feed = _SubscriptionProtocol(dispatcher.consume, ReadGate()).data_received
        for chunk in data:
            feed(chunk)
            await asyncio.sleep(0)
    while workers and counter.n < n:  # noqa: ASYNC110 - a loop turn per check, as profile_drain does
        await asyncio.sleep(0)
    took = time.process_time() - began
    assert track is None or variant == "replay" or track.last == n, "a message left the fast path"
    for w in workers:
        await w.stop()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--variant", choices=VARIANTS, action="append")
    args = parser.parse_args()
    variants = args.variant or list(VARIANTS)
    backlogs = {False: chunks(args.messages, False), True: chunks(args.messages, True)}
    taken: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.reps):
        for v in variants:
            seconds = asyncio.run(run_once(v, backlogs[v.endswith("rec")], args.messages))
            taken[v].append(seconds / args.messages * 1e6)
    for v in variants:
        print(f"{v:12s} min {min(taken[v]):.3f} median {statistics.median(taken[v]):.3f} µs/msg")


if __name__ == "__main__":
    main()
