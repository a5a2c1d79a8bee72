"""The scenarios of issues 5 and 10, in the order the suite runs them (7, memory, is read from 1 and 3)."""

from __future__ import annotations

from benchmarks.scenarios import burst, drain, fanout, latency, many, olympics, publish
from benchmarks.scenarios.base import Case, Measurement, Scenario

SCENARIOS: list[Scenario] = [
    drain.SCENARIO,
    fanout.SCENARIO,
    many.SCENARIO,
    latency.SCENARIO,
    olympics.SCENARIO,
    publish.SCENARIO,
    burst.SCENARIO,
]
BY_KEY = {s.key: s for s in SCENARIOS}

__all__ = ["BY_KEY", "SCENARIOS", "Case", "Measurement", "Scenario"]
