"""The consumers compared in every scenario; each is a small script run in its own process."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    module: str  # run as ``python -m benchmarks.contenders.<module> SPEC.json``
    requires: str  # the import that must work for it to run
    connection_per_handler: bool = False  # how many subscriptions Redis will report per handler
    slow: bool = False  # gets Settings.slow_share of the throughput workloads

    def missing(self) -> str | None:
        """Why it cannot run here, or None."""
        try:
            found = importlib.util.find_spec(self.requires) is not None
        except (ImportError, ValueError):
            found = False
        return None if found else f"`{self.requires}` is not importable"


EVENTBUS = "eventbus"
LIMIT = "limit"

CONTENDERS: list[Contender] = [
    Contender(EVENTBUS, "eventbus", "eventbus_app", "eventbus"),
    Contender(LIMIT, "Python limit (hiredis on a raw asyncio socket, inline await)", "limit", "hiredis"),
    Contender("redis_listen", "redis.asyncio PubSub.listen()", "redis_listen", "redis"),
    Contender("redis_run", "redis.asyncio PubSub.run() callbacks", "redis_run", "redis"),
    Contender("threads", "tutorial: sync listen() per thread", "threads", "redis", connection_per_handler=True),
    Contender(
        "faststream",
        "FastStream @broker.subscriber",
        "faststream_sub",
        "faststream",
        connection_per_handler=True,
        slow=True,
    ),
]
BY_KEY = {c.key: c for c in CONTENDERS}
