"""The drain, in process: recorded RESP bytes through the real reader path, no socket, no publisher.

Feeds 200,000 pre-built ``message`` replies (60-byte JSON) in 64 KiB chunks, one chunk per loop
turn, to one of these variants and reports CPU µs per message (the minimum over ``--reps`` runs):

- ``parse``: ``hiredis.Reader.feed`` + ``gets()`` and nothing else
- ``body``: ``parse`` + the handler body called as a plain function (orjson + count)
- ``limit``: ``parse`` + the handler awaited inline (benchmarks/contenders/limit.py's loop)
- ``route``: the real ``_SubscriptionProtocol.data_received`` -> ``Dispatcher.consume`` (lookup,
  ``Message``), routed to no worker (no ``put`` call)
- ``bare``: protocol -> dispatcher -> a worker whose ``put`` only appends and wakes and whose loop
  only pops and awaits (subclass :class:`Bare`): the hand-off skeleton
- ``acct``: ``bare`` plus the memory budget (the real ``put``, the loop's subtraction)
- ``eventbus``: the full path: protocol -> ``Dispatcher.consume`` -> ``HandlerWorker.put`` ->
  ``HandlerWorker._work`` -> ``async def handler(msg, ctx)`` calling the same body

``--handlers 5`` gives the fan-out (five handlers on the one channel). ``--profile`` runs one rep
under cProfile and prints the top functions. Under ``valgrind --tool=callgrind`` use ``--reps 1``;
the instruction counts are repeatable on a loaded machine where the times are not.

    PYTHONPATH=$PWD python -m benchmarks.profile_drain --variant eventbus --reps 9
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from collections.abc import Callable

import hiredis
import orjson

from eventbus import Context, Message, on
from eventbus._backends.subscriber import _SubscriptionProtocol
from eventbus._dispatch import Dispatcher
from eventbus._flow import ReadGate
from eventbus._router import Router
from eventbus._stats import BusStats, HandlerStats
from eventbus._subscription import Subscription
from eventbus._worker import HandlerWorker

CHANNEL = "bench"
CHUNK = 64 * 1024
VARIANTS = ("parse", "body", "limit", "route", "bare", "acct", "eventbus")


def resp_backlog(n: int) -> list[bytes]:
    """``n`` identical message replies of 60-byte JSON, cut into socket-read-sized chunks.

    Identical, so building the backlog costs next to nothing per message (callgrind counts it).
    """
    ch = CHANNEL.encode()
    payload = orjson.dumps({"id": 123456, "kind": "order", "pad": ""})
    payload = orjson.dumps({"id": 123456, "kind": "order", "pad": "x" * (60 - len(payload))})
    assert len(payload) == 60, len(payload)
    out = b"*3\r\n$7\r\nmessage\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(ch), ch, len(payload), payload) * n
    return [out[i : i + CHUNK] for i in range(0, len(out), CHUNK)]


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def body(self) -> Callable[[bytes], None]:
        loads = orjson.loads

        def body(data: bytes) -> None:  # the benchmark's drain body, minus its clock marks
            loads(data)
            self.n += 1

        return body


class Bare(HandlerWorker):
    """The hand-off skeleton alone: ``put`` appends and wakes; the loop pops and awaits the handler.

    No memory accounting, no clock, no latency bucket, no fairness yield: what is left is the
    price of the inbox and the worker task themselves.
    """

    def put(self, msg: Message) -> None:
        self.inbox.append(msg)
        if self._sleepers:
            self._wake_one()

    async def _work(self) -> None:
        inbox = self.inbox
        popleft = inbox.popleft
        call = self._invoke
        ctx = self.ctx
        while True:
            if not inbox:
                await self._wait_for_work(None)
            while inbox:
                await call(popleft(), ctx)


class Accounted(HandlerWorker):
    """:class:`Bare` plus the memory budget on both sides: the real ``put``, the loop's subtraction."""

    async def _work(self) -> None:
        inbox = self.inbox
        popleft = inbox.popleft
        call = self._invoke
        ctx = self.ctx
        overhead = 100
        while True:
            if not inbox:
                await self._wait_for_work(None)
            while inbox:
                msg = popleft()
                self.queued_bytes -= len(msg.data) + overhead
                await call(msg, ctx)


WORKERS: dict[str, type[HandlerWorker]] = {"bare": Bare, "acct": Accounted, "eventbus": HandlerWorker}


def make_workers(k: int, counters: list[Counter], cls: type[HandlerWorker]) -> list[HandlerWorker]:
    workers = []
    for i in range(k):
        body = counters[i].body()

        async def handler(msg: Message, ctx: Context, body: Callable[[bytes], None] = body) -> None:
            body(msg.data)

        handler.__name__ = handler.__qualname__ = f"h{i}"
        h = Router([on(CHANNEL)(handler)]).handlers[0]
        workers.append(cls(h, None, HandlerStats(), None))  # type: ignore[arg-type]
    return workers


async def run_once(variant: str, chunks: list[bytes], n: int, k: int) -> float:
    counters = [Counter() for _ in range(k)]
    key = CHANNEL.encode()
    tick = asyncio.sleep
    if variant in ("parse", "body", "limit"):
        bodies = [c.body() for c in counters]
        handlers = []
        for b in bodies:

            async def h(data: bytes, b: Callable[[bytes], None] = b) -> None:
                b(data)

            handlers.append(h)
        table = {key: handlers}
        reader = hiredis.Reader()
        t0 = time.process_time()
        for chunk in chunks:
            reader.feed(chunk)
            if variant == "parse":
                while reader.gets() is not False:
                    pass
            elif variant == "body":
                while (reply := reader.gets()) is not False:
                    for b in bodies:
                        b(reply[2])
            else:
                while (reply := reader.gets()) is not False:
                    if reply[0] == b"message":
                        for hh in table[reply[1]]:
                            await hh(reply[2])
            await tick(0)  # one loop turn per read, as the socket gives
        return time.process_time() - t0

    dispatcher = Dispatcher(BusStats())
    gate = ReadGate()
    workers: list[HandlerWorker] = []
    if variant == "route":
        dispatcher.channels[key] = (CHANNEL, ())
    else:
        workers = make_workers(k, counters, WORKERS[variant])
        dispatcher.add_routes((Subscription("channel", CHANNEL), w) for w in workers)
        for w in workers:
            w.start()
        await tick(0)  # the workers park
    proto = _SubscriptionProtocol(dispatcher.consume, gate)
    feed = proto.data_received
    t0 = time.process_time()
    for chunk in chunks:
        feed(chunk)
        await tick(0)
    if workers:
        while any(c.n < n for c in counters):
            await tick(0)
    took = time.process_time() - t0
    for w in workers:
        await w.stop()
    return took


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--variant", choices=VARIANTS, action="append")
    p.add_argument("--messages", type=int, default=200_000)
    p.add_argument("--handlers", type=int, default=1)
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--profile", action="store_true", help="one rep under cProfile, top 25 by tottime")
    args = p.parse_args(argv)
    chunks = resp_backlog(args.messages)
    variants = args.variant or list(VARIANTS)
    best: dict[str, float] = {v: float("inf") for v in variants}
    if args.profile:
        for v in variants:
            prof = cProfile.Profile()
            prof.enable()
            asyncio.run(run_once(v, chunks, args.messages, args.handlers))
            prof.disable()
            print(f"== {v}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return
    for _ in range(args.reps):  # alternating, so a noisy spell hits every variant alike
        for v in variants:
            best[v] = min(best[v], asyncio.run(run_once(v, chunks, args.messages, args.handlers)))
    per = {v: best[v] / args.messages * 1e6 for v in variants}
    print(
        f"{args.messages} messages, {args.handlers} handler(s), min CPU of {args.reps} reps,"
        f" Python {sys.version.split()[0]}"
    )
    for v in variants:
        ratio = f"  limit/this {per['limit'] / per[v]:.2f}x" if "limit" in per else ""
        print(f"{v:9s} {per[v]:6.3f} µs/msg{ratio}")


if __name__ == "__main__":
    main()
