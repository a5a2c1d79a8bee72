"""The olympics app end to end on a real redis-server: simulated purchases in, exact state out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from olympics_expect import actual_state, expected_alerts, expected_state, wait_received

import apps.olympics as olympics
import eventbus
from apps.olympics import EVENT_PRICES, Order, create_events, generate_orders, load_report, post_purchase, simulate
from tests.redis_server import RedisServer

N = 3000
SEED = 2020
EVENTS = list(EVENT_PRICES)
ANALYTICS = ("sales_analytics", "events_analytics", "customer_purchases")


@pytest.fixture
async def runner(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[eventbus.Runner]:
    monkeypatch.setenv("OLYMPICS_SIMULATE", "0")  # the test is the producer
    async with eventbus.Runner(olympics, url=redis_server.url, grace=5.0) as running:
        yield running


async def test_every_total_set_and_bucket_is_exact(
    runner: eventbus.Runner, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    orders = generate_orders(N, SEED)
    opening, ceremonies = expected_alerts(orders)
    assert 0 < opening < ceremonies < N  # the seed exercises every listener

    async with eventbus.connect(redis_server.url) as bus:
        await create_events(bus)
        await simulate(bus, orders, rate=0)
        # Broken orders in the same stream: refused and dead-lettered, the rest unaffected.
        await bus.publish("purchase_orders", "no-such-order")
        await bus.redis.hset("purchase_order_details:bad-qty", mapping={"who": "X", "event": "Opening Ceremony"})
        await bus.redis.hset("purchase_order_details:bad-qty", mapping={"qty": "many", "cost": "1", "ts": "0"})
        await bus.publish("purchase_orders:Opening Ceremony", "bad-qty")

    expected = {name: N + 1 for name in ANALYTICS}
    expected |= {"opening_ceremony_alerter": opening + 1, "ceremony_alerter": ceremonies + 1}
    await wait_received(runner, expected)

    stats = runner.stats.handlers
    for name in ANALYTICS:
        assert (stats[name].handled, stats[name].rejected, stats[name].failed) == (N, 1, 0), name
    assert (stats["opening_ceremony_alerter"].handled, stats["opening_ceremony_alerter"].rejected) == (opening, 1)
    assert (stats["ceremony_alerter"].handled, stats["ceremony_alerter"].rejected) == (ceremonies, 1)

    with redis_server.client() as client:
        want, got = expected_state(orders), actual_state(client, EVENTS)
        assert got.summary == want.summary
        assert got.sales == want.sales
        assert got.invoices == want.invoices
        assert got.histogram == want.histogram
        assert got.event_histograms == want.event_histograms
        dead = client.xrange("eventbus:dead-letter")
        assert len(dead) == 5  # three analytics listeners + two alerters
        errors = sorted(fields[b"error"].decode() for _, fields in dead)
        assert sum("no hash at purchase_order_details:no-such-order" in e for e in errors) == 3
        assert sum("'bad-qty': malformed" in e for e in errors) == 2

    # The alerters print one line per delivery, in the tutorial's format.
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("===> Purchase Opening Ceremony: #") for line in out) == opening
    assert sum(line.startswith("Purchase ") and " Ceremony: #" in line for line in out) == ceremonies

    # The report reads the same state back.
    report = await load_report(runner.redis)
    assert report.orders == N
    assert report.tickets == sum(o.qty for o in orders)
    assert report.sales == sum(o.cost for o in orders)
    assert report.histogram == want.histogram


async def test_counters_saturate_instead_of_wrapping(runner: eventbus.Runner, redis_server: RedisServer) -> None:
    limit = 2**32 - 1
    order = Order("big-hour", "Jim", "Womens Judo", 9, 315.0, 1_595_548_800 + 5 * 3600)
    with redis_server.client() as client:
        client.execute_command("BITFIELD", "sales_histogram:time_of_day", "SET", "u32", "#5", limit - 3)
    async with eventbus.connect(redis_server.url) as bus:
        await post_purchase(bus, order)
    await wait_received(runner, dict.fromkeys(ANALYTICS, 1))
    with redis_server.client() as client:
        overall = client.execute_command("BITFIELD", "sales_histogram:time_of_day", "GET", "u32", "#5")
        per_event = client.execute_command("BITFIELD", "sales_histogram:time_of_day:Womens Judo", "GET", "u32", "#5")
    assert overall == [limit]  # pegged at the maximum, not wrapped to 5
    assert per_event == [9]
    assert runner.stats.handlers["sales_analytics"].failed == 0


async def test_startup_hook_simulates_and_reports(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo in-process, asked for explicitly with a URL: OLYMPICS_SIMULATE purchases from the
    seed, kept under the demo's prefix (not a server the runner started), then the report."""
    monkeypatch.setenv("OLYMPICS_SIMULATE", "200")
    monkeypatch.setenv("OLYMPICS_RATE", "0")
    monkeypatch.setenv("OLYMPICS_SEED", "5")
    orders = generate_orders(200, 5)
    async with eventbus.Runner(olympics, url=redis_server.url, grace=5.0) as runner:
        deadline, out = time.monotonic() + 30, ""
        while "Still listening" not in out:
            assert time.monotonic() < deadline, "the demo printed no report"
            await asyncio.sleep(0.05)
            out += capsys.readouterr().out
        assert runner.idle()
    assert "Sales summary" in out and "Tickets sold by hour of day (UTC)" in out
    assert "Check: the histogram counts" in out
    with redis_server.client() as client:
        assert actual_state(client, EVENTS, "olympics-demo:") == expected_state(orders)
        assert not client.exists("sales_summary")  # the tutorial's names are left alone


async def test_a_same_named_key_of_another_type_is_a_clear_dead_letter(
    runner: eventbus.Runner, redis_server: RedisServer
) -> None:
    """On the tutorial's key names (a deployment), someone else's ``sales_summary`` string makes
    events_analytics refuse each order with a reason naming the key; the other listeners go on."""
    with redis_server.client() as client:
        client.set("sales_summary", "not a hash")
    order = Order("o-1", "Jim", "Womens Judo", 2, 70.0, 1_595_548_800)
    async with eventbus.connect(redis_server.url) as bus:
        await post_purchase(bus, order)
    await wait_received(runner, dict.fromkeys(ANALYTICS, 1))
    stats = runner.stats.handlers
    assert stats["events_analytics"].rejected == 1
    assert stats["sales_analytics"].handled == stats["customer_purchases"].handled == 1
    [dead] = await eventbus.DeadLetterStore(runner.redis).list()
    assert dead.handler == "events_analytics" and dead.payload == b"o-1"
    assert "cannot update 'sales_summary'" in dead.error and "WRONGTYPE" in dead.error
    with redis_server.client() as client:
        assert client.get("sales_summary") == b"not a hash"  # left as it was
