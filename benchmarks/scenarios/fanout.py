"""Scenario 2: every order reaches five handlers, laid out as in the olympics app."""

from __future__ import annotations

from benchmarks.contenders import Contender
from benchmarks.scenarios.base import Case, Scenario
from benchmarks.scenarios.drainrun import drain
from benchmarks.settings import Settings
from benchmarks.spec import HandlerDef
from benchmarks.workloads import CEREMONIES, OPENING, ORDERS, fanout_commands


def handlers(orders: int) -> list[HandlerDef]:
    # Three listeners on the channel, one on the exact event channel, one pattern that also matches
    # it: each order (published to both channels) is handled five times.
    return [
        HandlerDef("sales_analytics", "channel", [ORDERS], orders),
        HandlerDef("events_analytics", "channel", [ORDERS], orders),
        HandlerDef("customer_purchases", "channel", [ORDERS], orders),
        HandlerDef("opening_ceremony_alerter", "channel", [OPENING], orders),
        HandlerDef("ceremony_alerter", "pattern", [CEREMONIES], orders),
    ]


def build(s: Settings, contenders: list[Contender]) -> list[Case]:
    cases = []
    for c in contenders:
        n = s.scaled(s.fanout_orders, c.slow)
        hs = handlers(n)
        run = lambda c=c, hs=hs, n=n: drain(c, hs, lambda: fanout_commands(n))  # noqa: E731
        cases.append(Case("fanout", "5 handlers", c.key, run))
    return cases


SCENARIO = Scenario(
    key="fanout",
    number=2,
    title="Fan-out (handler calls per second)",
    unit="calls/s",
    method=(
        "Drain method. Each order is published to `purchase_orders` and to "
        "`purchase_orders:Opening Ceremony`; handlers: three on `purchase_orders`, one on exactly "
        "`purchase_orders:Opening Ceremony`, one on the pattern `purchase_orders:* Ceremony`: five "
        "handler calls (each decoding the JSON) per order. Figure: handler calls per second; orders/s is "
        "a fifth of it."
    ),
    build=build,
)
