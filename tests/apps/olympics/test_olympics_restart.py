"""The olympics listeners through a restart, on a real redis-server: purchases posted while they
are stopped are processed when they are back, and every total stays exact, after a clean stop
and after a SIGKILL (the listeners count each order once, so what a crash repeats adds nothing)."""

from __future__ import annotations

import asyncio
import signal

import pytest
from olympics_expect import actual_state, expected_alerts, expected_state, wait_received

import apps.olympics as olympics
import eventbus
from apps.olympics import EVENT_PRICES, Order, create_events, generate_orders, simulate
from tests.cli_process import EventbusProcess
from tests.fault.helpers import eventually
from tests.redis_server import RedisServer

EVENTS = list(EVENT_PRICES)
ANALYTICS = ("sales_analytics", "events_analytics", "customer_purchases")


def deliveries(orders: list[Order]) -> dict[str, int]:
    opening, _ = expected_alerts(orders)
    return dict.fromkeys(ANALYTICS, len(orders)) | {"opening_ceremony_alerter": opening}


async def post(url: str, orders: list[Order], **options: float) -> None:
    async with eventbus.connect(url) as bus:
        await create_events(bus)
        await simulate(bus, orders, **options)


async def test_a_clean_restart_processes_what_was_posted_while_down_exactly_once(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OLYMPICS_SIMULATE", "0")  # the test is the producer
    orders = generate_orders(1500, seed=22)
    before, down, after = orders[:500], orders[500:1000], orders[1000:]

    async with eventbus.Runner(olympics, url=redis_server.url, grace=5.0) as first:
        await post(redis_server.url, before, rate=0)
        await wait_received(first, deliveries(before))
    await post(redis_server.url, down, rate=0)  # no listener runs
    async with eventbus.Runner(olympics, url=redis_server.url, grace=5.0) as second:
        await post(redis_server.url, after, rate=0)
        await wait_received(second, deliveries(down + after))
        for name in ANALYTICS:
            stats = second.stats.handlers[name]
            assert (stats.received, stats.handled, stats.rejected) == (1000, 1000, 0), name
        assert second.stats.channels["purchase_orders"].unclean_resumes == 0

    with redis_server.client() as client:
        assert actual_state(client, EVENTS) == expected_state(orders)

    out = capsys.readouterr().out.splitlines()
    opening, _ = expected_alerts(orders)
    assert sum(line.startswith("===> Purchase Opening Ceremony: #") for line in out) == opening
    # The pattern alerter has no position to resume from: the ceremonies posted while the app was
    # down are not alerted from the pattern (see the app's README).
    _, ceremonies_seen = expected_alerts(before + after)
    assert sum(line.startswith("Purchase ") for line in out) == ceremonies_seen


async def test_a_sigkilled_listener_process_restarts_with_exact_totals(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """A real ``python -m eventbus run apps.olympics`` killed mid-stream while purchases keep
    coming: after its restart every total, set and histogram bucket is exact, although the crash
    makes the listeners handle again what they had handled since their last saved position."""
    url = redis_server.url
    env = subprocess_env | {"OLYMPICS_SIMULATE": "0"}
    orders = generate_orders(3000, seed=23)
    before, during, after = orders[:1000], orders[1000:2000], orders[2000:]

    def start() -> EventbusProcess:
        process = EventbusProcess(["run", "apps.olympics", "--url", url], env)
        process.wait_for("subscribed to")
        return process

    first = start()
    second = None
    try:
        await post(url, before, rate=0)
        posted = 0

        def count(_: Order) -> None:
            nonlocal posted
            posted += 1

        async with eventbus.connect(url) as bus:
            steady = asyncio.create_task(simulate(bus, during, rate=2_000, on_posted=count))
            await eventually(lambda: posted >= 300, what="a third of the purchases during the crash")
            first.process.kill()  # SIGKILL, while purchases are being posted and handled
            assert first.wait() == -signal.SIGKILL
            await steady
        second = start()
        await post(url, after, rate=0)

        def exact() -> bool:
            with redis_server.client() as client:
                return actual_state(client, EVENTS) == expected_state(orders)

        await eventually(exact, timeout=30, what="the exact totals of all 3,000 purchases")
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
        assert "resuming after a crash" in second.output
    finally:
        first.kill()
        if second is not None:
            second.kill()
