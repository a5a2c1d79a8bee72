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
    loop: str = "asyncio"  # the event loop it runs on: "asyncio" or "uvloop"
    # The scenarios it takes part in (None: all). The uvloop variants run where the issue asks
    # for both loops, so the full suite's time does not double.
    scenarios: frozenset[str] | None = None
    env: tuple[tuple[str, str], ...] = ()  # added to its process's environment

    def missing(self) -> str | None:
        """Why it cannot run here, or None."""
        for module in (self.requires, "uvloop" if self.loop == "uvloop" else None):
            if module is None:
                continue
            try:
                found = importlib.util.find_spec(module) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                hint = " (pip install uvloop)" if module == "uvloop" else ""
                return f"`{module}` is not importable{hint}"
        return None

    def takes_part(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios


EVENTBUS = "eventbus"
LIMIT = "limit"
EVENTBUS_PURE = "eventbus_pure"
EVENTBUS_UVLOOP = "eventbus_uvloop"
LIMIT_UVLOOP = "limit_uvloop"
UVLOOP_SCENARIOS = frozenset({"drain", "burst"})

CONTENDERS: list[Contender] = [
    Contender(EVENTBUS, "eventbus", "eventbus_app", "eventbus"),
    Contender(LIMIT, "Python limit (hiredis on a raw asyncio socket, inline await)", "limit", "hiredis"),
    # Issue 15: the same eventbus on its pure-Python reference path (eventbus._hotpath), where the
    # hot path's cost shows: the drain, the fan-out and the many-handlers scenario.
    Contender(
        EVENTBUS_PURE,
        "eventbus, pure-Python hot path (EVENTBUS_PURE_PYTHON=1)",
        "eventbus_app",
        "eventbus",
        scenarios=frozenset({"drain", "fanout", "many", "olympics"}),
        env=(("EVENTBUS_PURE_PYTHON", "1"),),
    ),
    Contender(
        EVENTBUS_UVLOOP, "eventbus on uvloop", "eventbus_app", "eventbus", loop="uvloop", scenarios=UVLOOP_SCENARIOS
    ),
    Contender(
        LIMIT_UVLOOP,
        "Python limit on uvloop",
        "limit",
        "hiredis",
        loop="uvloop",
        scenarios=frozenset({"drain"}),
    ),
    # What middleware costs (issue 14): the eventbus contender with one no-op middleware, and with
    # the tracing middleware on the OpenTelemetry SDK. Drain only, where per-message cost shows.
    Contender(
        "eventbus_middleware",
        "eventbus, one no-op middleware",
        "eventbus_middleware",
        "eventbus",
        scenarios=frozenset({"drain"}),
    ),
    Contender(
        "eventbus_tracing",
        "eventbus, tracing middleware (OTel SDK)",
        "eventbus_tracing",
        "opentelemetry.sdk",
        scenarios=frozenset({"drain"}),
    ),
    # What the heartbeat costs (issue 25): the eventbus contender without it, and beating every
    # 50 ms (100 times the default rate, so that beats land inside a sub-second drain).
    Contender(
        "eventbus_no_heartbeat",
        "eventbus, no heartbeat",
        "eventbus_app",
        "eventbus",
        scenarios=frozenset({"drain"}),
        env=(("BENCH_HEARTBEAT_INTERVAL", "off"),),
    ),
    Contender(
        "eventbus_heartbeat_50ms",
        "eventbus, heartbeat every 50 ms",
        "eventbus_app",
        "eventbus",
        scenarios=frozenset({"drain"}),
        env=(("BENCH_HEARTBEAT_INTERVAL", "0.05"),),
    ),
    # Issue 13: the same drain with the payload decoded into a msgspec Struct by the handler's annotation.
    Contender(
        "eventbus_typed", "eventbus, typed msgspec handler", "eventbus_typed", "msgspec", scenarios=frozenset({"drain"})
    ),
    # Issue 23: a batch handler that does nothing, `batch=Batch()` with default sizes: what the
    # framework costs per message when the handler's own per-message work is gone.
    Contender(
        "eventbus_batch",
        "eventbus, no-op batch handler (Batch())",
        "eventbus_batch",
        "eventbus",
        scenarios=frozenset({"drain"}),
    ),
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
