"""Request/reply round trips (issue 24): eventbus against FastStream and a hand-written redis.asyncio pair.

    python -m benchmarks.request_reply [--sequential 1000] [--total 10000] [--concurrency 100] [--reps 3]

Each contender is a responder process that echoes the request's payload and a requester in this
process, on a private redis-server (the two processes never compete with each other for a core
more than they must on a 2-core machine). Per contender and run: ``--sequential`` requests one
after another, then ``--total`` requests from ``--concurrency`` concurrent callers; round trips per
second and the p50/p99 latency of each. Contenders are interleaved run by run; the figures are
medians of ``--reps`` runs. Standalone: not part of ``python -m benchmarks``.

- ``eventbus``: ``@on("rpc")`` returning the payload, run by ``Runner`` with default settings;
  ``bus.request`` through ``eventbus.connect()``.
- ``redis-py``: a good hand-written pair: the responder on ``PubSub.listen()`` publishes each reply
  (awaited in line, as a ``listen()`` loop does); the requester subscribes one reply channel once,
  reads it in one task and matches replies to futures by correlation id.
- ``faststream``: ``@broker.subscriber("rpc")`` returning the payload; ``broker.request(...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis

from benchmarks.redisproc import RedisServer

CHANNEL = "rpc"
PAYLOAD = b'{"pair":"EURUSD","side":"buy","amount":1000}'
Call = Callable[[bytes], Awaitable[bytes]]


# -- responders (run as child processes: python -m benchmarks.request_reply --respond KIND URL) -----------


def respond_eventbus(url: str) -> None:
    from eventbus import Context, Message, on, run

    @on(CHANNEL)
    async def echo(msg: Message, ctx: Context) -> bytes:
        return msg.data

    run([echo], url=url, log_level="WARNING")


def respond_redis(url: str) -> None:
    async def main() -> None:
        client = redis.asyncio.Redis.from_url(url)
        pubsub = client.pubsub()
        await pubsub.subscribe(CHANNEL)
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            reply_to, correlation, body = message["data"].split(b"|", 2)
            await client.publish(reply_to, correlation + b"|" + body)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())


def respond_faststream(url: str) -> None:
    from faststream import FastStream
    from faststream.redis import RedisBroker
    from faststream.redis.annotations import RedisMessage

    broker = RedisBroker(url, logger=None)

    # The raw message, as the other responders take it (a JSON body would otherwise be decoded).
    @broker.subscriber(CHANNEL)
    async def echo(msg: RedisMessage) -> bytes:
        body: bytes = msg.body
        return body

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(FastStream(broker, logger=None).run())


RESPONDERS = {"eventbus": respond_eventbus, "redis-py": respond_redis, "faststream": respond_faststream}


# -- requesters ------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def eventbus_requester(url: str) -> Any:
    import eventbus

    async with eventbus.connect(url) as bus:

        async def call(payload: bytes) -> bytes:
            reply = await bus.request(CHANNEL, payload, timeout=30)
            data: bytes = reply.data
            return data

        yield call


@contextlib.asynccontextmanager
async def redis_requester(url: str) -> Any:
    # A blocking pool as large as the concurrency: redis-py's default pool refuses the 101st caller.
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, max_connections=100)
    client = redis.asyncio.Redis(connection_pool=pool)
    pubsub = client.pubsub()
    reply_to = f"replies:{uuid.uuid4().hex}".encode()
    await pubsub.subscribe(reply_to)
    waiting: dict[bytes, asyncio.Future[bytes]] = {}
    ids = itertools.count()

    async def read() -> None:
        async for message in pubsub.listen():
            if message["type"] != "message":
                continue
            correlation, body = message["data"].split(b"|", 1)
            future = waiting.pop(correlation, None)
            if future is not None and not future.done():
                future.set_result(body)

    reader = asyncio.create_task(read())

    async def call(payload: bytes) -> bytes:
        correlation = str(next(ids)).encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        waiting[correlation] = future
        try:
            await client.publish(CHANNEL, reply_to + b"|" + correlation + b"|" + payload)
            return await asyncio.wait_for(future, 30)
        finally:
            waiting.pop(correlation, None)

    try:
        yield call
    finally:
        reader.cancel()
        with contextlib.suppress(BaseException):
            await reader
        await pubsub.aclose()
        await client.aclose()


@contextlib.asynccontextmanager
async def faststream_requester(url: str) -> Any:
    from faststream.redis import RedisBroker

    # Each request subscribes a pub/sub connection of its own: redis-py's default pool (100
    # connections) refuses 100 concurrent requests, so the pool is raised for it to run at all.
    broker = RedisBroker(url, logger=None, max_connections=1000)
    await broker.connect()

    async def call(payload: bytes) -> bytes:
        response = await broker.request(payload, channel=CHANNEL, timeout=30)
        body: bytes = response.body
        return body

    try:
        yield call
    finally:
        await broker.stop()


REQUESTERS = {"eventbus": eventbus_requester, "redis-py": redis_requester, "faststream": faststream_requester}


# -- measuring -------------------------------------------------------------------------------------


def wait_subscribed(url: str, timeout: float = 30.0) -> None:
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + timeout
    while client.pubsub_numsub(CHANNEL)[0][1] < 1:
        if time.monotonic() > deadline:
            raise RuntimeError("the responder did not subscribe")
        time.sleep(0.05)
    client.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(call: Call, sequential: int, total: int, concurrency: int) -> dict[str, float]:
    for _ in range(50):  # warm up: connections, the reply subscription, the responder's caches
        assert await call(PAYLOAD) == PAYLOAD
    latencies: list[float] = []
    start = time.perf_counter()
    for _ in range(sequential):
        sent = time.perf_counter()
        assert await call(PAYLOAD) == PAYLOAD
        latencies.append(time.perf_counter() - sent)
    seq_rate = sequential / (time.perf_counter() - start)
    seq_p50, seq_p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)

    concurrent: list[float] = []

    async def caller(n: int) -> None:
        for _ in range(n):
            sent = time.perf_counter()
            assert await call(PAYLOAD) == PAYLOAD
            concurrent.append(time.perf_counter() - sent)

    start = time.perf_counter()
    await asyncio.gather(*(caller(total // concurrency) for _ in range(concurrency)))
    conc_rate = len(concurrent) / (time.perf_counter() - start)
    return {
        "seq_rate": seq_rate,
        "seq_p50": seq_p50 * 1000,
        "seq_p99": seq_p99 * 1000,
        "conc_rate": conc_rate,
        "conc_p50": percentile(concurrent, 0.5) * 1000,
        "conc_p99": percentile(concurrent, 0.99) * 1000,
    }


def one_run(kind: str, sequential: int, total: int, concurrency: int) -> dict[str, float]:
    with RedisServer() as server:
        responder = subprocess.Popen([sys.executable, "-m", "benchmarks.request_reply", "--respond", kind, server.url])
        try:
            wait_subscribed(server.url)

            async def run() -> dict[str, float]:
                async with REQUESTERS[kind](server.url) as call:
                    return await measure(call, sequential, total, concurrency)

            return asyncio.run(run())
        finally:
            responder.send_signal(signal.SIGINT)
            try:
                responder.wait(15)
            except subprocess.TimeoutExpired:
                responder.kill()
                responder.wait()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.request_reply")
    parser.add_argument("--sequential", type=int, default=1000)
    parser.add_argument("--total", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--contenders", default="eventbus,redis-py,faststream")
    parser.add_argument("--respond", nargs=2, metavar=("KIND", "URL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.respond:
        RESPONDERS[args.respond[0]](args.respond[1])
        return
    kinds = args.contenders.split(",")
    if "faststream" in kinds and importlib.util.find_spec("faststream") is None:
        print("faststream is not installed (pip install -e '.[bench]'): skipped", file=sys.stderr)
        kinds.remove("faststream")
    runs: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for rep in range(args.reps):
        for kind in kinds:
            figures = one_run(kind, args.sequential, args.total, args.concurrency)
            runs[kind].append(figures)
            print(f"run {rep + 1} {kind}: " + " ".join(f"{k}={v:.1f}" for k, v in figures.items()), file=sys.stderr)
    print(f"\nmedians of {args.reps} runs; {args.sequential} sequential, {args.total} from {args.concurrency} callers")
    print(f"(pid {os.getpid()}, Python {sys.version.split()[0]})\n")
    print("| contender | sequential rt/s | p50 ms | p99 ms | concurrent rt/s | p50 ms | p99 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    medians = {kind: {k: statistics.median(r[k] for r in runs[kind]) for k in runs[kind][0]} for kind in kinds}
    for kind in kinds:
        m = medians[kind]
        print(
            f"| {kind} | {m['seq_rate']:,.0f} | {m['seq_p50']:.2f} | {m['seq_p99']:.2f} "
            f"| {m['conc_rate']:,.0f} | {m['conc_p50']:.2f} | {m['conc_p99']:.2f} |"
        )
    if "eventbus" in medians:
        base = medians["eventbus"]["conc_rate"]
        for kind in kinds:
            if kind != "eventbus":
                print(f"\neventbus / {kind}, concurrent throughput: {base / medians[kind]['conc_rate']:.2f}x")


if __name__ == "__main__":
    main()
