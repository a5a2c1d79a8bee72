"""Command rates of the shared command client (ctx.redis): plain redis.asyncio vs auto-pipelining.

    python benchmarks/command_client.py [--runs 3] [--duration 2] [--concurrency 1,50,1000]

Each measurement runs in a fresh process against a private redis-server (never :6379): ``C``
asyncio tasks each await one command at a time, in a loop, for ``--duration`` seconds, cycling
through the olympics listeners' kind of commands (HINCRBY, SADD, HGETALL on a small hash, GET).
Reported: the median commands/s of ``--runs`` runs, and auto-pipelining's ratio to plain.
``redis.asyncio pipeline(100)`` (explicit batching, one task) is shown as a reference.

Contenders:
- ``plain``: redis.asyncio on a BlockingConnectionPool of 64 (ctx.redis before auto-pipelining);
- ``auto``: ``eventbus._backends.command_client()`` (the auto-pipelining client, 64 connections).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONTENDERS = ("plain", "auto")


def make_client(kind: str, url: str) -> Any:
    import redis.asyncio as aioredis

    if kind == "plain":
        pool = aioredis.BlockingConnectionPool.from_url(url, max_connections=64, timeout=None)
        return aioredis.Redis(connection_pool=pool)
    from eventbus._backends import command_client

    return command_client(url, max_connections=64)


def operations(client: Any) -> list[Callable[[int], Awaitable[Any]]]:
    return [
        lambda i: client.hincrby("sales_summary", f"event{i % 4}:total_tickets_sold", 1),
        lambda i: client.sadd(f"sales:event{i % 4}", i % 1000),
        lambda i: client.hgetall("purchase_order_details:1"),
        lambda i: client.get("counter"),
    ]


async def measure(kind: str, url: str, concurrency: int, duration: float) -> float:
    """Commands per second: ``concurrency`` tasks awaiting one command at a time."""
    client = make_client(kind, url)
    await client.hset("purchase_order_details:1", mapping={"who": "ann", "event": "Opening Ceremony", "qty": 2})
    ops = operations(client)
    count = 0
    stop = False

    async def worker(offset: int) -> None:
        nonlocal count
        i = offset
        while not stop:
            await ops[i % len(ops)](i)
            i += 1
            count += 1

    async def pipelined() -> None:
        nonlocal count
        i = 0
        while not stop:
            async with client.pipeline(transaction=False) as pipe:
                for _ in range(100):
                    getattr(pipe, ("hincrby", "sadd", "hgetall", "get")[i % 4])(
                        *(
                            ("sales_summary", f"event{i % 4}:total_tickets_sold", 1),
                            (f"sales:event{i % 4}", i % 1000),
                            ("purchase_order_details:1",),
                            ("counter",),
                        )[i % 4]
                    )
                    i += 1
                await pipe.execute()
            count += 100

    # Warm up (connections, imports), then measure a fixed duration.
    await asyncio.gather(*(ops[0](i) for i in range(min(concurrency, 64))))
    count = 0
    started = time.perf_counter()
    tasks = (
        [asyncio.create_task(pipelined())]
        if concurrency == 0
        else [asyncio.create_task(worker(i)) for i in range(concurrency)]
    )
    await asyncio.sleep(duration)
    stop = True
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - started
    await client.aclose()
    return count / elapsed


def run_one(kind: str, url: str, concurrency: int, duration: float) -> float:
    """One measurement in a fresh interpreter, so no run inherits another's garbage or caches."""
    code = (
        "import asyncio, sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.command_client import measure; "
        "print(asyncio.run(measure(sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(ROOT), kind, url, str(concurrency), str(duration)],
        check=True,
        capture_output=True,
        text=True,
        timeout=duration * 10 + 60,
    )
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,50,1000", help="comma-separated task counts")
    parser.add_argument("--json", type=Path, help="also write every measurement here")
    args = parser.parse_args()
    levels = [int(level) for level in args.concurrency.split(",")]

    from benchmarks.redisproc import RedisServer

    rows: list[tuple[str, int]] = [("plain", 0)] + [(kind, level) for level in levels for kind in CONTENDERS]
    results: dict[str, list[float]] = {}
    with RedisServer() as server:
        for run in range(args.runs):
            for kind, level in rows:
                key = f"{kind}:{level}"
                rate = run_one(kind, server.url, level, args.duration)
                results.setdefault(key, []).append(rate)
                print(
                    f"run {run + 1}/{args.runs}  {kind:5}  concurrency {level or 'pipeline(100)':>13}: {rate:>9,.0f}/s",
                    file=sys.stderr,
                )

    medians = {key: statistics.median(values) for key, values in results.items()}
    print(f"\nCommands/s, median of {args.runs} runs of {args.duration:g}s (private redis-server):\n")
    print("| concurrent callers | redis.asyncio | auto-pipelining | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for level in levels:
        plain, auto = medians[f"plain:{level}"], medians[f"auto:{level}"]
        label = "1 (sequential)" if level == 1 else str(level)
        print(f"| {label} | {plain:,.0f} | {auto:,.0f} | {auto / plain:.1f}x |")
    print(f"| reference: redis.asyncio pipeline(100), 1 task | {medians['plain:0']:,.0f} | | |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
