"""The five listeners in memory, with eventbus.testing.TestBus (no server)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from olympics_expect import expected_alerts, expected_state

import apps.olympics as olympics
from apps.olympics import create_events, generate_orders, post_purchase
from apps.olympics.report import decode_histogram
from eventbus.testing import TestBus

ANALYTICS = ("sales_analytics", "events_analytics", "customer_purchases")


@pytest.fixture
async def bus(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestBus]:
    monkeypatch.setenv("OLYMPICS_SIMULATE", "0")
    async with TestBus(olympics) as running:
        yield running


async def test_one_opening_ceremony_order_reaches_all_five(bus: TestBus, capsys: pytest.CaptureFixture[str]) -> None:
    order = olympics.Order("o1", "Jim", "Opening Ceremony", 3, 360.0, 1_595_548_800 + 19 * 3600 + 5)
    receptions = await post_purchase(bus, order)
    # As Redis counts: one subscriber connection gets purchase_orders once and the event channel
    # twice (as a channel and through the pattern); eventbus fans each out to its handlers.
    assert receptions == 3
    await bus.drain()

    redis = bus.redis
    assert await redis.hgetall("sales_summary") == {
        b"Opening Ceremony:total_sales": b"360",
        b"Opening Ceremony:total_tickets_sold": b"3",
    }
    assert await redis.smembers("sales:Opening Ceremony") == {b"o1"}
    assert await redis.smembers("invoices:Jim") == {b"o1"}
    overall = decode_histogram(await redis.get("sales_histogram:time_of_day"))
    assert overall == [0] * 19 + [3] + [0] * 4  # 19:00 UTC
    assert decode_histogram(await redis.get("sales_histogram:time_of_day:Opening Ceremony")) == overall
    # One line per subscription that matched; the two alerters run independently, in any order.
    assert sorted(capsys.readouterr().out.splitlines()) == [
        "===> Purchase Opening Ceremony: #3 $360",
        "Purchase Opening Ceremony: #3 $360",
    ]


async def test_judo_order_alerts_nobody(bus: TestBus, capsys: pytest.CaptureFixture[str]) -> None:
    order = olympics.Order("j1", "Mei", "Womens Judo", 2, 70.0, 1_595_548_800)
    assert await post_purchase(bus, order) == 1  # purchase_orders; nobody takes Womens Judo's channel
    await bus.drain()
    assert capsys.readouterr().out == ""
    assert bus.handler_stats("ceremony_alerter").received == 0
    assert await bus.redis.smembers("invoices:Mei") == {b"j1"}


async def test_simulated_orders_in_memory_match_expectations(bus: TestBus) -> None:
    orders = generate_orders(400, seed=3)
    await create_events(bus)
    for order in orders:
        await post_purchase(bus, order)
    await bus.drain()
    want = expected_state(orders)
    summary = {k.decode(): float(v) for k, v in (await bus.redis.hgetall("sales_summary")).items()}
    assert summary == want.summary
    for who, ids in want.invoices.items():
        assert {m.decode() for m in await bus.redis.smembers(f"invoices:{who}")} == ids
    assert decode_histogram(await bus.redis.get("sales_histogram:time_of_day")) == want.histogram
    opening, ceremonies = expected_alerts(orders)
    assert bus.handler_stats("opening_ceremony_alerter").handled == opening
    assert bus.handler_stats("ceremony_alerter").handled == ceremonies


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        (None, "no hash at purchase_order_details:x1"),
        ({"who": "Jim", "event": "Mens 4x400", "qty": "2", "cost": "100"}, "missing field(s) ts"),
        ({"who": "Jim", "event": "Mens 4x400", "qty": "two", "cost": "100", "ts": "1"}, "malformed"),
        ({"who": "Jim", "event": "Mens 4x400", "qty": "0", "cost": "100", "ts": "1"}, "qty 0 is not between"),
        ({"who": "Jim", "event": "Mens 4x400", "qty": "2", "cost": "nan", "ts": "1"}, "cost 'nan'"),
        ({"who": "Jim", "event": "Mens 4x400", "qty": "2", "cost": "100", "ts": "-5"}, "ts '-5'"),
    ],
)
async def test_missing_or_malformed_order_is_dead_lettered(
    bus: TestBus, fields: dict[str, str] | None, error: str
) -> None:
    if fields is not None:
        await bus.redis.hset("purchase_order_details:x1", mapping=fields)
    await bus.publish("purchase_orders", "x1")
    await bus.drain()
    for name in ANALYTICS:
        stats = bus.handler_stats(name)
        assert (stats.rejected, stats.failed, stats.dead_lettered) == (1, 0, 1), name
    letters = await bus.dead_letters()
    assert sorted(d.handler for d in letters) == sorted(ANALYTICS)
    assert all(error in d.error and d.payload == b"x1" and d.channel == "purchase_orders" for d in letters), letters
    assert await bus.redis.exists("sales_summary", "sales_histogram:time_of_day") == 0  # nothing half-written

    # The listeners go on with the next order.
    await post_purchase(bus, olympics.Order("ok", "Jim", "Mens 4x400", 1, 50.0, 0))
    await bus.drain()
    assert all(bus.handler_stats(name).handled == 1 for name in ANALYTICS)


async def test_empty_and_non_utf8_ids_are_rejected(bus: TestBus) -> None:
    await bus.publish("purchase_orders:Closing Ceremony", b"")
    await bus.publish("purchase_orders:Closing Ceremony", b"\xff\xfe")
    await bus.drain()
    stats = bus.handler_stats("ceremony_alerter")
    assert (stats.rejected, stats.handled) == (2, 0)
    assert len(await bus.dead_letters()) == 2
