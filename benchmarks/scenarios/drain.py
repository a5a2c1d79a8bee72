"""Scenario 1: drain a backlog of 60-byte JSON messages through one decoding handler."""

from __future__ import annotations

from benchmarks.contenders import Contender
from benchmarks.scenarios.base import Case, Scenario
from benchmarks.scenarios.drainrun import drain
from benchmarks.settings import Settings
from benchmarks.spec import HandlerDef
from benchmarks.workloads import publish_commands

CHANNEL = "bench"


def single_channel_case(scenario: str, variant: str, c: Contender, n: int) -> Case:
    handlers = [HandlerDef("decode", "channel", [CHANNEL], n)]
    return Case(scenario, variant, c.key, lambda: drain(c, handlers, lambda: publish_commands([CHANNEL], n)))


def build(s: Settings, contenders: list[Contender]) -> list[Case]:
    return [single_channel_case("drain", "1 channel", c, s.scaled(s.drain_n, c.slow)) for c in contenders]


SCENARIO = Scenario(
    key="drain",
    number=1,
    title="Drain throughput",
    unit="msg/s",
    method=(
        "N messages of 60-byte JSON published (pipelined) to one channel while the consumer is "
        "SIGSTOPped with the pubsub output-buffer limit lifted, then SIGCONT; one handler decodes each "
        "message with orjson; the consumer times its first to its Nth handler call."
    ),
    build=build,
)
