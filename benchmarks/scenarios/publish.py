"""Scenario 6: the publishing API's messages per second, one await at a time and in bursts."""

from __future__ import annotations

import json
import subprocess
import sys

from benchmarks.consumer import ROOT, BenchError, python_env
from benchmarks.contenders import EVENTBUS, Contender
from benchmarks.redisproc import RedisServer
from benchmarks.scenarios.base import Case, Measurement, Scenario
from benchmarks.settings import Settings

CLIENTS = {EVENTBUS: "eventbus `bus.publish`", "redis_publish": "redis.asyncio `Redis.publish`"}
MODES = {"one": "one at a time", "burst": "gather of 100"}


def measure(lib: str, mode: str, n: int) -> Measurement:
    with RedisServer() as server:
        p = subprocess.run(
            [sys.executable, "-m", "benchmarks.publishers.publish", lib, mode, server.url, str(n)],
            cwd=ROOT,
            env=python_env(),
            capture_output=True,
            timeout=120 + n / 500,
        )
    if p.returncode != 0:
        raise BenchError(f"{lib} publisher failed:\n{p.stderr.decode(errors='replace')[-1500:]}")
    res = json.loads(p.stdout.decode().strip().splitlines()[-1])
    return {"value": res["rate"], "complete": True, "count": res["sent"], "expected": n}


def build(s: Settings, contenders: list[Contender]) -> list[Case]:
    keys = {c.key for c in contenders}
    cases = []
    for key, lib in ((EVENTBUS, "eventbus"), ("redis_publish", "redis")):
        if key == EVENTBUS and EVENTBUS not in keys:
            continue  # eventbus not importable or not selected
        for mode, variant in MODES.items():
            cases.append(Case("publish", variant, key, lambda lib=lib, mode=mode: measure(lib, mode, s.publish_n)))
    return cases


SCENARIO = Scenario(
    key="publish",
    number=6,
    title="Publishing",
    unit="msg/s",
    method=(
        "One process publishes N 60-byte messages to a channel with no subscriber, either awaiting "
        "each publish in turn or `asyncio.gather` of 100 at a time; connection opened and warmed "
        "before the clock starts."
    ),
    build=build,
    labels=CLIENTS,
)
