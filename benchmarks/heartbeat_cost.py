"""What a runner's heartbeat costs, in CPU: ``python -m benchmarks.heartbeat_cost``.

The drain scenario compares eventbus with and without the heartbeat (contenders ``eventbus``,
``eventbus_no_heartbeat``, ``eventbus_heartbeat_50ms``), but a beat every 5 seconds hardly lands
in a sub-second drain, and a shared machine's noise is larger than 1%. This measures the beat
itself: a runner with ``--handlers`` handlers on a private redis-server, its snapshot (building
and encoding it) and a whole beat (the snapshot and its three commands, round trips included),
in process CPU time per beat, medians of ``--reps`` runs of ``--beats`` beats. The share of one
core that beating every 5 seconds takes is that CPU time over 5 seconds; against a drain it is
the share of the drain's own CPU time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

from benchmarks.redisproc import RedisServer
from eventbus import Context, Message, Runner, on
from eventbus._heartbeat import INTERVAL, Heartbeat


def handlers(count: int) -> list[Any]:
    made = []
    for index in range(count):

        async def handler(msg: Message, ctx: Context) -> None:
            pass

        handler.__name__ = handler.__qualname__ = f"handler_{index}"
        made.append(on(f"channel-{index}", f"other-{index}")(handler))
    return made


async def measure(url: str, count: int, beats: int, reps: int) -> tuple[float, float]:
    runner = Runner(handlers(count), url=url)
    runner.heartbeat_interval = None  # beats are driven here, one after the other
    async with runner:
        heartbeat = Heartbeat(
            runner.redis,
            runner.router.name,
            runner.workers,
            runner.stats,
            runner.read_gate,
            dead_letter_stream=lambda: runner.dead_letter_stream,
            connected=lambda: True,
        )
        snapshots, whole = [], []
        for _ in range(reps):
            start = time.process_time()
            for _ in range(beats):
                heartbeat.snapshot()
            snapshots.append((time.process_time() - start) / beats)
            start = time.process_time()
            for _ in range(beats):
                await heartbeat.beat()
            whole.append((time.process_time() - start) / beats)
    return statistics.median(snapshots), statistics.median(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handlers", type=int, default=10)
    parser.add_argument("--beats", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    server = RedisServer()
    try:
        snapshot, beat = asyncio.run(measure(server.url, args.handlers, args.beats, args.reps))
    finally:
        server.stop()
    print(f"{args.handlers} handlers, medians of {args.reps} x {args.beats} beats (process CPU time):")
    print(f"  snapshot (build + encode): {snapshot * 1e6:.0f} us per beat")
    print(f"  whole beat (snapshot + HSET, SET EX, EXPIRE): {beat * 1e6:.0f} us per beat")
    print(f"  beating every {INTERVAL:g} s takes {beat / INTERVAL:.4%} of one core")


if __name__ == "__main__":
    main()
