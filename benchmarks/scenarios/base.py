"""What a scenario is: a list of cases, each one measurement of one contender in one variant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.contenders import Contender
from benchmarks.settings import Settings

# One repetition's figures: "value" is the headline number, the rest are shown or kept as context.
Measurement = dict[str, Any]


@dataclass(frozen=True)
class Case:
    scenario: str
    variant: str
    contender: str  # a key of Scenario.labels
    run: Callable[[], Measurement]


@dataclass(frozen=True)
class Scenario:
    key: str
    number: int
    title: str
    unit: str  # of "value"
    method: str  # one paragraph for RESULTS.md
    build: Callable[[Settings, list[Contender]], list[Case]]
    higher_is_better: bool = True
    labels: dict[str, str] = field(default_factory=dict)  # contender key -> label, for non-consumer rows
    skip: Callable[[], str | None] = lambda: None  # a reason not to run at all, checked at start
