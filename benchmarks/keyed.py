"""Per-key ordering (issue 13): a keyed handler with an I/O-bound body against ``concurrency=1``.

    python -m benchmarks.keyed [--messages 2000] [--keys 50] [--io-ms 2] [--concurrency 8] [--reps 3]

Each message's handler awaits ``--io-ms`` of simulated I/O (``asyncio.sleep``: a database or HTTP
call). With ``concurrency=1`` the messages go one after another; with ``key="customer"`` and
``concurrency=N`` up to N customers are served at once while each customer's messages stay in
order (checked at the end of every run). Both run against a private redis-server, publishing the
whole backlog first and timing the first to the last message inside the consumer; the figures are
medians of ``--reps`` runs, interleaved. Standalone: not part of ``python -m benchmarks``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import msgspec

from benchmarks.redisproc import RedisServer
from eventbus import Context, Runner, on


class Purchase(msgspec.Struct):
    customer: str
    seq: int


async def one_run(url: str, messages: int, keys: int, io_ms: float, concurrency: int, keyed: bool) -> float:
    channel = f"keyed-bench:{time.monotonic_ns()}"
    seen: dict[str, list[int]] = {}
    done = asyncio.Event()
    times: list[float] = []
    count = 0
    options: dict[str, Any] = {"concurrency": concurrency, "key": "customer"} if keyed else {}

    @on(channel, name="purchases", **options)
    async def handler(purchase: Purchase, ctx: Context) -> None:
        nonlocal count
        if not times:
            times.append(time.perf_counter())
        await asyncio.sleep(io_ms / 1000)
        seen.setdefault(purchase.customer, []).append(purchase.seq)
        count += 1
        if count == messages:
            times.append(time.perf_counter())
            done.set()

    async with Runner([handler], url=url, stats_interval=None, log_level="warning") as runner:
        assert runner.publisher is not None
        pipe = runner.redis.pipeline(transaction=False)
        for seq in range(messages):
            pipe.publish(channel, msgspec.json.encode(Purchase(f"c{seq % keys}", seq)))
        await pipe.execute()
        await asyncio.wait_for(done.wait(), 600)
    for customer, seqs in seen.items():
        if seqs != sorted(seqs):
            raise AssertionError(f"customer {customer}: out of order")
    return messages / (times[1] - times[0])


async def main(args: argparse.Namespace) -> None:
    server = RedisServer()
    try:
        rates: dict[str, list[float]] = {"concurrency=1": [], f"key=customer, concurrency={args.concurrency}": []}
        for _ in range(args.reps):
            rates["concurrency=1"].append(
                await one_run(server.url, args.messages, args.keys, args.io_ms, 1, keyed=False)
            )
            rates[f"key=customer, concurrency={args.concurrency}"].append(
                await one_run(server.url, args.messages, args.keys, args.io_ms, args.concurrency, keyed=True)
            )
    finally:
        server.stop()
    base = statistics.median(rates["concurrency=1"])
    print(f"{args.messages} messages, {args.keys} customers, {args.io_ms:g} ms of I/O each, {args.reps} rep(s)")
    print("| handler | msg/s (median) | ratio |")
    print("| --- | --- | --- |")
    for label, values in rates.items():
        median = statistics.median(values)
        print(f"| {label} | {median:,.0f} | {median / base:.1f}x |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--io-ms", type=float, default=2.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
