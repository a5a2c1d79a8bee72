"""Scenario 4: steady 10,000 msg/s from another process; handler latency from a stamp in the payload."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.consumer import ROOT, BenchError, consumer, python_env
from benchmarks.contenders import Contender
from benchmarks.redisproc import RedisServer
from benchmarks.scenarios.base import Case, Measurement, Scenario
from benchmarks.scenarios.drainrun import dropped
from benchmarks.settings import Settings
from benchmarks.spec import HandlerDef

CHANNEL = "latency"


def measure(contender: Contender, rate: int, seconds: float) -> Measurement:
    n = int(rate * seconds)
    handlers = [HandlerDef("stamp", "channel", [CHANNEL], n)]
    with RedisServer() as server:
        # A consumer slower than the rate (FastStream) must fall behind, not be disconnected.
        server.unlimited_pubsub_buffers()
        with consumer(contender, {"mode": "latency", "handlers": handlers}, server) as c:
            c.wait_subscribed(server)
            pub = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.publishers.paced",
                    str(server.port),
                    CHANNEL,
                    str(rate),
                    str(seconds),
                ],
                cwd=ROOT,
                env=python_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                res = c.result(timeout=seconds * 4 + 60)
                out, err = pub.communicate(timeout=seconds + 30)
            finally:
                if pub.poll() is None:
                    pub.kill()
                    pub.wait()
            if pub.returncode != 0:
                raise BenchError(f"paced publisher failed: {err.decode(errors='replace')[-800:]}")
    sent = json.loads(out)
    lat = res.get("latency_us", {})
    return {
        "value": lat.get("p99", float("nan")),
        "p50": lat.get("p50"),
        "p99": lat.get("p99"),
        "max": lat.get("max"),
        "complete": res["complete"],
        "count": res["count"],
        "expected": n,
        "publish_rate": sent["rate"],
        # Below the publish rate the consumer falls behind and its latency is its growing backlog.
        "consume_rate": res["rate"],
        "dropped": dropped(res),
        "peak_rss_kib": res["peak_rss_kib"],
    }


def build(s: Settings, contenders: list[Contender]) -> list[Case]:
    variant = f"{s.latency_rate:,} msg/s for {s.latency_seconds:g} s"
    return [
        Case("latency", variant, c.key, lambda c=c: measure(c, s.latency_rate, s.latency_duration(c.slow)))
        for c in contenders
    ]


SCENARIO = Scenario(
    key="latency",
    number=4,
    title="Latency at a steady rate",
    unit="µs p99",
    method=(
        "A separate publisher process sends 10,000 msg/s for 10 s (3 s in quick mode) to one channel, "
        "each message's JSON carrying its CLOCK_MONOTONIC send time; the handler subtracts it from the "
        "time it is called. Publisher and consumer share the two cores, as in production. FastStream "
        "cannot keep this rate: it runs 1 s, and its latency is the backlog it builds."
    ),
    build=build,
    higher_is_better=False,
)
