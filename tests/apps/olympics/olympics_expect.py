"""What a list of orders must leave in Redis, computed independently of the app's code, and
a reader of the actual state through plain Redis commands (BITFIELD GET, not the app's decoder)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import eventbus
from apps.olympics import Order


@dataclass
class State:
    summary: dict[str, float] = field(default_factory=dict)  # sales_summary field -> number
    sales: dict[str, set[str]] = field(default_factory=dict)  # event -> order ids
    invoices: dict[str, set[str]] = field(default_factory=dict)  # who -> order ids
    histogram: list[int] = field(default_factory=lambda: [0] * 24)
    event_histograms: dict[str, list[int]] = field(default_factory=dict)


def expected_state(orders: Sequence[Order]) -> State:
    summary: dict[str, float] = defaultdict(float)
    sales: dict[str, set[str]] = defaultdict(set)
    invoices: dict[str, set[str]] = defaultdict(set)
    histogram = [0] * 24
    per_event: dict[str, list[int]] = defaultdict(lambda: [0] * 24)
    for o in orders:
        hour = time.gmtime(o.ts).tm_hour
        summary[f"{o.event}:total_sales"] += o.cost
        summary[f"{o.event}:total_tickets_sold"] += o.qty
        sales[o.event].add(o.id)
        invoices[o.who].add(o.id)
        histogram[hour] += o.qty
        per_event[o.event][hour] += o.qty
    return State(dict(summary), dict(sales), dict(invoices), histogram, dict(per_event))


def expected_alerts(orders: Sequence[Order]) -> tuple[int, int]:
    """(Opening Ceremony alerter, ceremony pattern alerter) deliveries."""
    opening = sum(1 for o in orders if o.event == "Opening Ceremony")
    ceremonies = sum(1 for o in orders if o.event in ("Opening Ceremony", "Closing Ceremony"))
    return opening, ceremonies


def actual_state(client: Any, events: Sequence[str], prefix: str = "") -> State:
    """The state in Redis (the tutorial's key names after ``prefix``), read with a synchronous redis-py client."""

    def text(value: bytes) -> str:
        return value.decode()

    def buckets(key: str) -> list[int]:
        args: list[Any] = []
        for hour in range(24):
            args += ["GET", "u32", f"#{hour}"]
        return [int(v) for v in client.execute_command("BITFIELD", key, *args)]

    p = prefix
    summary = {text(k): float(v) for k, v in client.hgetall(f"{p}sales_summary").items()}
    sales = {e: {text(m) for m in client.smembers(f"{p}sales:{e}")} for e in events if client.exists(f"{p}sales:{e}")}
    invoices = {
        text(key).removeprefix(f"{p}invoices:"): {text(m) for m in client.smembers(key)}
        for key in client.scan_iter(match=f"{p}invoices:*")
    }
    per_event = {e: buckets(f"{p}sales_histogram:time_of_day:{e}") for e in events}
    per_event = {e: counts for e, counts in per_event.items() if any(counts)}
    return State(summary, sales, invoices, buckets(f"{p}sales_histogram:time_of_day"), per_event)


async def wait_received(runner: eventbus.Runner, expected: dict[str, int], timeout: float = 30.0) -> None:
    """Until every handler has received what was published to it, then until it has processed it.

    A PUBLISH returns once Redis has queued the message for the subscriber, possibly before the
    runner has read it, so drain() alone could return early.
    """
    deadline = time.monotonic() + timeout
    while any(runner.stats.handlers[name].received < count for name, count in expected.items()):
        assert time.monotonic() < deadline, {n: runner.stats.handlers[n].received for n in expected}
        await asyncio.sleep(0.01)
    assert await runner.drain(timeout)
