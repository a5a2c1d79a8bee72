"""Scenario 5: N purchases through all five olympics listeners; purchases/s and the final state.

The tutorial's thread-per-listener version (benchmarks/olympics/tutorial.py) runs now. eventbus's
``apps.olympics`` runs unchanged through a counting wrapper once that module exists; until then
its case is skipped with a message. Both are checked against the exact expected final state
(computed from the seeded orders), and so against each other.
"""

from __future__ import annotations

import fnmatch
import importlib.util

from benchmarks.consumer import consumer
from benchmarks.contenders import EVENTBUS, EVENTBUS_PURE, Contender
from benchmarks.olympics import data
from benchmarks.redisproc import RedisServer
from benchmarks.scenarios.base import Case, Measurement, Scenario
from benchmarks.settings import Settings
from benchmarks.spec import HandlerDef

TUTORIAL = Contender(
    "tutorial_threads", "tutorial: thread per listener", "olympics.tutorial", "redis", connection_per_handler=True
)
EVENTBUS_APP = Contender(EVENTBUS, "eventbus apps.olympics", "olympics.eventbus_app", "eventbus")
# The same app on the pure-Python hot path, which is what an install without a C compiler runs.
EVENTBUS_APP_PURE = Contender(
    EVENTBUS_PURE,
    "eventbus apps.olympics, pure-Python path",
    "olympics.eventbus_app",
    "eventbus",
    env=(("EVENTBUS_PURE_PYTHON", "1"),),
)


def expected_calls(handler: HandlerDef, channels: list[str]) -> int:
    """How many deliveries Redis makes to this handler's subscriptions for these publishes."""
    if handler.kind == "channel":
        subs = set(handler.subs)
        return sum(1 for c in channels if c in subs)
    return sum(1 for c in channels for p in handler.subs if redis_glob(p, c))


def redis_glob(pattern: str, channel: str) -> bool:
    try:
        from eventbus._glob import glob_match  # Redis's own rules, when eventbus is there
    except ImportError:  # the tutorial run alone: its patterns use only `*`, where fnmatch agrees
        return fnmatch.fnmatchcase(channel, pattern)
    return glob_match(pattern.encode(), channel.encode())


def tutorial_handlers() -> list[HandlerDef]:
    o = data.ORDERS
    return [
        HandlerDef("sales_analytics", "channel", [o], 0),
        HandlerDef("events_analytics", "channel", [o], 0),
        HandlerDef("customer_purchases", "channel", [o], 0),
        HandlerDef("opening_ceremony_alerter", "channel", [f"{o}:Opening Ceremony"], 0),
        HandlerDef("ceremony_alerter", "pattern", [f"{o}:* Ceremony"], 0),
    ]


def app_handlers() -> list[HandlerDef]:
    from benchmarks.olympics.eventbus_app import app_handlers as load

    return load()


def measure(contender: Contender, handlers: list[HandlerDef], n: int) -> Measurement:
    orders = data.orders(n)
    channels = list(data.published_channels(orders))
    hs = [HandlerDef(h.name, h.kind, h.subs, expected_calls(h, channels)) for h in handlers]
    with RedisServer() as server:
        server.unlimited_pubsub_buffers()
        with server.client() as c:
            c.pipeline(data.store_commands(orders))
        with consumer(contender, {"mode": "count", "handlers": hs}, server, module_prefix="benchmarks") as c:
            c.wait_subscribed(server)
            with c.paused(), server.client() as pub:
                pub.pipeline(data.publish_commands(orders))
            res = c.result(timeout=120 + n / 100)
        state = data.dump_state(server.url)
    want = data.expected_state(orders)
    return {
        "value": n / res["elapsed_s"] if res["complete"] and res["elapsed_s"] else 0.0,
        "complete": res["complete"],
        "count": res["count"],
        "expected": res["expected"],
        "state_exact": state == want,
        "state_digest": data.digest(state),
        "state_diff": data.diff(state, want),
        "peak_rss_kib": res["peak_rss_kib"],
        # The consumer's CPU seconds over the same span (first to last finished message).
        "cpu_s": res.get("cpu_s"),
    }


def app_missing() -> str | None:
    try:
        found = importlib.util.find_spec("apps.olympics") is not None
    except (ImportError, ValueError):
        found = False
    return None if found else "apps.olympics is not importable yet: only the tutorial baseline runs"


def build(s: Settings, contenders: list[Contender]) -> list[Case]:
    n = s.olympics_n
    cases = [Case("olympics", f"{n:,} purchases", TUTORIAL.key, lambda: measure(TUTORIAL, tutorial_handlers(), n))]
    if any(c.key == EVENTBUS for c in contenders) and app_missing() is None:
        cases.append(Case("olympics", f"{n:,} purchases", EVENTBUS, lambda: measure(EVENTBUS_APP, app_handlers(), n)))
    if any(c.key == EVENTBUS_PURE for c in contenders) and app_missing() is None:
        cases.append(
            Case("olympics", f"{n:,} purchases", EVENTBUS_PURE, lambda: measure(EVENTBUS_APP_PURE, app_handlers(), n))
        )
    return cases


SCENARIO = Scenario(
    key="olympics",
    number=5,
    title="Olympics workload",
    unit="purchases/s",
    method=(
        "N seeded purchases: each order's hash is stored first (untimed), then the drain method: with "
        "the consumer SIGSTOPped, each order id is published to `purchase_orders` and to "
        "`purchase_orders:<event>`; the clock runs from the first listener finishing a message to the "
        "last listener finishing its last one. Then every key of the server is compared with the "
        "exact expected state (histograms are `BITFIELD INCRBY u32 #<UTC hour>`)."
    ),
    build=build,
    labels={TUTORIAL.key: TUTORIAL.label, EVENTBUS: EVENTBUS_APP.label, EVENTBUS_PURE: EVENTBUS_APP_PURE.label},
    skip=lambda: None,
)
