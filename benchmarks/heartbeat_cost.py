"""What a runner's heartbeat costs, in CPU: ``python -m benchmarks.heartbeat_cost``.

The drain scenario compares eventbus with and without the heartbeat (contenders ``eventbus``,
``eventbus_no_heartbeat``, ``eventbus_heartbeat_50ms``), but a beat every 5 seconds hardly lands
in a sub-second drain, and a shared machine's noise is larger than 1%. This measures the beat
itself: a runner with ``--handlers`` handlers on a private redis-server, its snapshot (building
and encoding it) and a whole beat (the snapshot and its three commands, round trips included),
in process CPU time per beat, medians of ``--reps`` runs of ``--beats`` beats. The share of one
core that beating every 5 seconds takes is that CPU time over 5 seconds; against a drain it is
the share of the drain's own CPU time.

Side by side in the same run: the runner without recoverable channels, then with ``--channels``
of them (each with a few counters that are not 0, as after recoveries), for each count given:
their recovery counters travel in the snapshot, at most ``CHANNELS_SENT`` of them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import orjson

from benchmarks.redisproc import RedisServer
from eventbus import Context, Message, Runner, on
from eventbus._heartbeat import CHANNELS_SENT, INTERVAL, Heartbeat
from eventbus._stats import BusStats


def handlers(count: int) -> list[Any]:
    made = []
    for index in range(count):

        async def handler(msg: Message, ctx: Context) -> None:
            pass

        handler.__name__ = handler.__qualname__ = f"handler_{index}"
        made.append(on(f"channel-{index}", f"other-{index}")(handler))
    return made


def recovered_on(stats: BusStats, channels: int) -> None:
    """``channels`` recoverable channels, each with counters as after a few recoveries."""
    stats.channels.clear()
    for index in range(channels):
        counters = stats.recovery(f"orders:{index:06d}")
        counters.recovered, counters.recoveries, counters.recovery_seconds = 1234 + index, 3, 0.0421
        counters.unrecovered = index % 7


async def measure(url: str, count: int, beats: int, reps: int, channels: list[int]) -> list[tuple[float, float, int]]:
    """Per channel count: (snapshot CPU seconds, whole beat CPU seconds, snapshot bytes)."""
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
        results: dict[int, tuple[list[float], list[float]]] = {n: ([], []) for n in channels}
        for _ in range(reps):  # the counts interleaved, so that the machine's drift hits each alike
            for n in channels:
                recovered_on(runner.stats, n)
                snapshots, whole = results[n]
                start = time.process_time()
                for _ in range(beats):
                    heartbeat.snapshot()
                snapshots.append((time.process_time() - start) / beats)
                start = time.process_time()
                for _ in range(beats):
                    await heartbeat.beat()
                whole.append((time.process_time() - start) / beats)
        sizes = {}
        for n in channels:
            recovered_on(runner.stats, n)
            sizes[n] = len(orjson.dumps(heartbeat.snapshot()))
    return [(statistics.median(results[n][0]), statistics.median(results[n][1]), sizes[n]) for n in channels]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handlers", type=int, default=10)
    parser.add_argument("--beats", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--channels", default=f"0,20,{CHANNELS_SENT},5000", help="recoverable channel counts, comma-separated"
    )
    args = parser.parse_args()
    channels = [int(n) for n in args.channels.split(",")]
    server = RedisServer()
    try:
        results = asyncio.run(measure(server.url, args.handlers, args.beats, args.reps, channels))
    finally:
        server.stop()
    print(f"{args.handlers} handlers, medians of {args.reps} x {args.beats} beats (process CPU time):")
    base = results[0][1]
    for n, (snapshot, beat, size) in zip(channels, results, strict=True):
        print(f"  {n} recoverable channel(s), {min(n, CHANNELS_SENT)} sent, snapshot {size:,} bytes:")
        print(f"    snapshot (build + encode): {snapshot * 1e6:.0f} us per beat")
        print(f"    whole beat (snapshot + HSET, SET EX, EXPIRE): {beat * 1e6:.0f} us per beat ({beat / base:.2f}x)")
        print(f"    beating every {INTERVAL:g} s takes {beat / INTERVAL:.4%} of one core")


if __name__ == "__main__":
    main()
