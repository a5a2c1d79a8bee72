"""Scenario 3: 10,000 channels on the one connection, messages spread over them.

Routing should be one dict lookup whatever the number of subscriptions, so the figure is compared
with the same contender draining one channel. Both variants run here, repetitions interleaved:
scenario 1's figure, taken minutes earlier, is no baseline on a shared machine whose load changes.
"""

from __future__ import annotations

from benchmarks.contenders import Contender
from benchmarks.scenarios.base import Case, Scenario
from benchmarks.scenarios.drain import single_channel_case
from benchmarks.scenarios.drainrun import drain
from benchmarks.settings import Settings
from benchmarks.spec import HandlerDef
from benchmarks.workloads import publish_commands

# FastStream opens a connection and a polling task per subscriber: 10,000 of them is not a
# configuration anyone would run, and says nothing about routing.
UNSUPPORTED = {"faststream": "one connection per subscriber: 10,000 connections"}


def build(s: Settings, contenders: list[Contender]) -> list[Case]:
    cases = []
    channels = [f"ch:{i}" for i in range(s.many_channels)]
    variant = f"{s.many_channels:,} channels"
    for c in contenders:
        if c.key in UNSUPPORTED:
            continue
        n = s.scaled(s.many_n, c.slow)
        hs = [HandlerDef("decode", "channel", channels, n)]
        run = lambda c=c, hs=hs, n=n: drain(c, hs, lambda: publish_commands(channels, n))  # noqa: E731
        cases.append(Case("many", variant, c.key, run))
        cases.append(single_channel_case("many", "1 channel", c, n))
    return cases


SCENARIO = Scenario(
    key="many",
    number=3,
    title="Many subscriptions",
    unit="msg/s",
    method=(
        "Drain method with one handler subscribed to 10,000 channels (`ch:0` … `ch:9999`) on its "
        "connection, messages published round-robin over them; compared with the same contender "
        "draining one channel in the same repetitions. FastStream is left out: it opens one connection per "
        "subscriber."
    ),
    build=build,
)
