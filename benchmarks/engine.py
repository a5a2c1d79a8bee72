"""The worker loop's throughput, per kind of handler, in process and over the socket (issue 21).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.engine [--messages 20000] [--reps 5]

Four workloads, each a trivial handler body (count; the last message sets an event), so what is
measured is the engine around the handler, not the handler:

- ``drain``: one handler on one channel;
- ``fanout``: five handlers on the same channel (each message handled five times);
- ``keyed``: one handler with ``key=`` and ``concurrency=8``, 100 keys (ordered per key);
- ``stream``: one ``@on_stream`` handler reading a stream that holds the whole backlog
  (XREADGROUP -> handler -> XACK).

Each runs on the in-memory backend (``memory``: TestBus's broker, no socket) and on a private
``redis-server`` on a free port (``socket``). Pub/sub backlogs are published once the runner is
subscribed, the stream backlog is appended before the runner starts; the time is from the first to
the last message inside the consumer, with default settings. Each figure is the median of
``--reps`` runs (interleaved by workload), in messages handled per second (wall clock) and in CPU
microseconds of the consumer's process per message (which other load on a shared machine disturbs
far less; over the socket it includes publishing the backlog). Which hot path ran
(compiled or pure) is printed first: compare two builds by running this script against each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio

from benchmarks.redisproc import RedisServer
from eventbus import Context, Message, Runner, on, on_stream
from eventbus._backends.memory import MemoryBroker
from eventbus._hotpath import describe

PAYLOAD = b'{"message": "hello", "from": "+12025550100", "to": "+558455501"}'
HANDLERS_IN_FANOUT = 5
KEYS = 100


class Clock:
    """First and last handled message, across every handler of a run."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.count = 0
        self.first = self.last = 0.0
        self.first_cpu = self.last_cpu = 0.0
        self.done = asyncio.Event()

    def tick(self) -> None:
        if not self.count:
            self.first, self.first_cpu = time.perf_counter(), time.process_time()
        self.count += 1
        if self.count == self.expected:
            self.last, self.last_cpu = time.perf_counter(), time.process_time()
            self.done.set()

    def rate(self) -> float:
        return self.count / (self.last - self.first)

    def cpu_us(self) -> float:
        """CPU time of this process per handled message: what other load on the machine disturbs least."""
        return (self.last_cpu - self.first_cpu) * 1e6 / self.count


def handlers_for(workload: str, name: str, clock: Clock) -> list[Callable[..., Any]]:
    tick = clock.tick
    if workload == "stream":

        @on_stream(name, name="stream")
        async def stream(msg: Message, ctx: Context) -> None:
            tick()

        return [stream]
    if workload == "keyed":

        @on(name, name="keyed", key=lambda msg: msg.data[-4:], concurrency=8)
        async def keyed(msg: Message, ctx: Context) -> None:
            tick()

        return [keyed]
    handlers = []
    for i in range(HANDLERS_IN_FANOUT if workload == "fanout" else 1):

        @on(name, name=f"h{i}")
        async def handler(msg: Message, ctx: Context) -> None:
            tick()

        handlers.append(handler)
    return handlers


def payloads(messages: int) -> list[bytes]:
    # Distinct tails give the keyed workload its KEYS keys (its key is the last four bytes).
    return [PAYLOAD + b"%04d" % (i % KEYS) for i in range(messages)]


async def one_run(workload: str, transport: str, url: str | None, messages: int) -> tuple[float, float]:
    name = f"engine-{workload}-{time.monotonic_ns()}"
    copies = HANDLERS_IN_FANOUT if workload == "fanout" else 1
    clock = Clock(messages * copies)
    handlers = handlers_for(workload, name, clock)
    options: dict[str, Any] = {"stats_interval": None, "log_level": "warning"}
    broker = MemoryBroker() if transport == "memory" else None
    if broker is not None:
        options["broker"] = broker
    else:
        options["url"] = url
    data = payloads(messages)
    if workload == "stream":
        # The backlog first: the runner's consumer group starts from the beginning of the stream.
        client = broker.client() if broker is not None else redis.asyncio.Redis.from_url(url)
        pipe = client.pipeline(transaction=False)
        for payload in data:
            pipe.xadd(name, {b"data": payload})
        await pipe.execute()
        await client.aclose()
    async with Runner(handlers, **options) as runner:
        if workload != "stream":
            if broker is not None:
                for payload in data:
                    broker.publish(name, payload)
            else:
                pipe = runner.redis.pipeline(transaction=False)
                for payload in data:
                    pipe.publish(name, payload)
                await pipe.execute()
        await asyncio.wait_for(clock.done.wait(), 300)
        dropped = sum(s.dropped for s in runner.stats.handlers.values())
        assert not dropped, f"{workload}/{transport}: {dropped} dropped"
    return clock.rate(), clock.cpu_us()


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1) + "\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", default="drain,fanout,keyed,stream")
    parser.add_argument("--transports", default="memory,socket")
    parser.add_argument("--json", help="also write the medians to this file")
    args = parser.parse_args()
    print(f"# {describe()}; {args.messages} messages, median of {args.reps} runs, messages handled per second")
    workloads = args.only.split(",")
    transports = args.transports.split(",")
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {(w, t): [] for t in transports for w in workloads}
    server = RedisServer(("--client-output-buffer-limit", "pubsub 0 0 0")) if "socket" in transports else None
    try:
        for _ in range(args.reps):
            for transport in transports:
                for workload in workloads:
                    url = server.url if server is not None else None
                    runs[(workload, transport)].append(await one_run(workload, transport, url, args.messages))
    finally:
        if server is not None:
            server.stop()
    medians = {
        f"{w}/{t}": {"rate": statistics.median(r for r, _ in found), "cpu_us": statistics.median(c for _, c in found)}
        for (w, t), found in runs.items()
    }
    print(f"{'workload':<10} {'transport':<9} {'median msg/s':>13} {'CPU us/msg':>11}")
    for key, median in medians.items():
        workload, transport = key.split("/")
        print(f"{workload:<10} {transport:<9} {median['rate']:>13,.0f} {median['cpu_us']:>11.2f}")
    if args.json:
        found = {f"{w}/{t}": r for (w, t), r in runs.items()}
        write_json(Path(args.json), {"hot_path": describe(), "medians": medians, "runs": found})


if __name__ == "__main__":
    asyncio.run(main())
