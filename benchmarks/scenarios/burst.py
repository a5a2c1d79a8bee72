"""Scenario 8: a backlog sent while the handler is busy, with the server's DEFAULT output-buffer limit.

This is the situation of issue 10: a plain handler (default options) is busy when a burst arrives.
A ``listen()`` loop stops reading while its handler runs, so Redis holds the backlog in the client's
output buffer; the default ``client-output-buffer-limit pubsub 32mb 8mb 60`` decides how far it may
fall behind before Redis drops the connection. eventbus keeps reading while its handler is busy, so
the backlog lands in the consumer process instead, under its own inbox bound. The scenario shows
what each design delivers, drops or loses, and what that costs in memory.

How "busy" is made the same for every contender: the handler's first call waits at a gate until the
orchestrator has published the whole backlog (pipelined, from this process) and releases it. An
``async def`` handler awaits (the event loop stays free, as with any I/O-bound handler); the
tutorials' thread blocks its own thread (as a blocking call in its handler would). Tying the busy
time to the publishing rather than to a fixed sleep guarantees the whole backlog is sent while the
handler is busy, whatever the speed of the machine, and adds no idle time after it.

Unlike the drain method, nothing is SIGSTOPped and the output-buffer limit is NOT lifted: the
consumer runs (eventbus's reader must be able to read during the burst, as it would in production),
and Redis's default limit is the thing under test. Publisher, redis-server and consumer therefore
share the two cores during the publishing; the time is a secondary figure.
"""

from __future__ import annotations

import time
from pathlib import Path

from benchmarks.consumer import BenchError, consumer
from benchmarks.contenders import EVENTBUS, EVENTBUS_UVLOOP, Contender
from benchmarks.redisproc import RedisServer
from benchmarks.scenarios.base import Case, Measurement, Scenario
from benchmarks.scenarios.drainrun import dropped
from benchmarks.settings import Settings
from benchmarks.spec import HandlerDef
from benchmarks.workloads import publish_commands

CHANNEL = "bench"
# The designs the issue compares: eventbus with defaults, redis.asyncio listen(), the tutorials' thread.
TAKES_PART = (EVENTBUS, EVENTBUS_UVLOOP, "redis_listen", "threads")
# After the release, a contender that has stopped receiving for this long has got all it will get
# (the publisher is done): its partial result is written. Short, because lossy runs are expected.
STALL_SECONDS = 5.0
DEFAULT_PUBSUB_LIMIT = "pubsub 33554432 8388608 60"  # redis-server's default: 32mb hard, 8mb soft for 60 s


def measure(contender: Contender, n: int) -> Measurement:
    handlers = [HandlerDef("decode", "channel", [CHANNEL], n)]
    spec = {"mode": "burst", "handlers": handlers, "stall_seconds": STALL_SECONDS}
    with RedisServer() as server:
        limits = server.config("client-output-buffer-limit")
        if DEFAULT_PUBSUB_LIMIT not in limits:  # the point of the scenario: never run it with another limit
            raise BenchError(f"redis-server's output-buffer limits are not the defaults: {limits!r}")
        with consumer(contender, spec, server) as c:
            c.wait_subscribed(server)
            t_start = time.monotonic_ns()  # CLOCK_MONOTONIC, as the consumer's own timestamps
            with server.client() as pub:
                pub.pipeline(publish_commands([CHANNEL], n))
            t_published = time.monotonic_ns()
            Path(c.spec.out + ".release").touch()  # the busy handler returns; see recorder.Gate
            res = c.result(timeout=60 + STALL_SECONDS + n / 10_000)
            disconnects = server.output_buffer_disconnects()
    delivered = int(res["count"])
    end = res.get("t_end_ns") or t_published
    extra = res.get("extra") if isinstance(res.get("extra"), dict) else {}
    return {
        "value": delivered,
        "complete": bool(res["complete"]),
        "count": delivered,
        "expected": n,
        "dropped": dropped(res),  # counted by eventbus itself; the others keep no such count
        "lost": n - delivered,
        "disconnects": disconnects,
        "reconnects": extra.get("reconnects") if extra else None,
        "peak_rss_kib": res["peak_rss_kib"],
        "time_s": (end - t_start) / 1e9,  # first PUBLISH sent to last message handled
        "publish_s": (t_published - t_start) / 1e9,
        "after_release_s": max(0, end - t_published) / 1e9,
        "consumer_errors": res.get("consumer_errors", []),
        "loop": res.get("loop"),
    }


def build(s: Settings, contenders: list[Contender]) -> list[Case]:
    cases = []
    for n in s.burst_sizes:
        for c in contenders:
            if c.key in TAKES_PART:
                cases.append(Case("burst", f"{n:,} messages", c.key, lambda c=c, n=n: measure(c, n)))
    return cases


SCENARIO = Scenario(
    key="burst",
    number=8,
    title="Burst while the handler is busy (default settings everywhere)",
    unit="delivered",
    method=(
        "N messages of 60-byte JSON published (pipelined) to one channel while the consumer's only handler "
        "is busy: its first call waits until the whole backlog is sent (an `async def` handler awaits, the "
        "thread design's handler blocks its thread). Then it decodes each message with orjson. Default "
        "handler options, and redis-server's default `client-output-buffer-limit pubsub 32mb 8mb 60` "
        "(not lifted). Delivered: handler calls; dropped: counted by eventbus's inbox policy; lost: sent minus "
        "delivered; disconnected: clients Redis closed for exceeding the output-buffer limit (from its log); "
        "peak RSS: the consumer's VmHWM; time: first PUBLISH to last handled message."
    ),
    build=build,
)
