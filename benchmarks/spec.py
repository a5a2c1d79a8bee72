"""What a consumer process is asked to do, passed to it as a small JSON file.

Every contender reads the same spec, so they subscribe to the same things, run the same handler
bodies and report the same figures; only the way messages reach the bodies differs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

# count: the body only counts (olympics); burst: drain, but the first call holds the handler busy
# until the orchestrator has published the whole backlog (see Gate in contenders/recorder.py)
Mode = Literal["drain", "latency", "count", "burst"]
Loop = Literal["asyncio", "uvloop"]
Kind = Literal["channel", "pattern"]


@dataclass(frozen=True)
class HandlerDef:
    """One handler: a name and what it subscribes to (all of one kind)."""

    name: str
    kind: Kind
    subs: list[str]
    expected: int  # invocations this handler must see before the run is complete


@dataclass(frozen=True)
class Spec:
    url: str
    out: str  # where the consumer writes its result JSON
    mode: Mode
    handlers: list[HandlerDef] = field(default_factory=list)
    stall_seconds: float = 10.0  # report a partial result if the count stops moving this long
    loop: Loop = "asyncio"  # the event loop of the asyncio contenders

    @property
    def expected_total(self) -> int:
        return sum(h.expected for h in self.handlers)

    def channel_routes(self) -> dict[str, list[str]]:
        """channel -> names of the handlers subscribed to it exactly."""
        return _routes(self.handlers, "channel")

    def pattern_routes(self) -> dict[str, list[str]]:
        return _routes(self.handlers, "pattern")

    def dump(self, path: str) -> None:
        with open(path, "w") as f:
            json.dump(asdict(self), f)

    @classmethod
    def load(cls, path: str) -> Spec:
        with open(path) as f:
            raw = json.load(f)
        raw["handlers"] = [HandlerDef(**h) for h in raw["handlers"]]
        return cls(**raw)


def _routes(handlers: list[HandlerDef], kind: Kind) -> dict[str, list[str]]:
    routes: dict[str, list[str]] = {}
    for h in handlers:
        if h.kind == kind:
            for s in h.subs:
                routes.setdefault(s, []).append(h.name)
    return routes
