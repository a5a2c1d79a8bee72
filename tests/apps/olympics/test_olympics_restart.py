"""The olympics listeners through a restart, on a real redis-server: purchases posted while they
are stopped are processed when they are back. After a clean stop every total is exact; after a
SIGKILL nothing is lost, and only what the listeners handled after their last saved position is
counted twice."""

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


async def test_a_sigkilled_listener_process_restarts_and_loses_nothing(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """A real ``python -m eventbus run apps.olympics`` killed mid-stream while purchases keep
    coming: after its restart every purchase is in the sets, and the sums count at most the last
    save interval's purchases twice."""
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

        expected = expected_state(orders)

        def all_in() -> bool:
            with redis_server.client() as client:
                actual = actual_state(client, EVENTS)
            return actual.sales == expected.sales and actual.invoices == expected.invoices

        await eventually(all_in, timeout=30, what="all 3,000 purchases in the sets")
        second.signal(signal.SIGTERM)
        assert second.wait() == 0
        assert "resuming after a crash" in second.output
        with redis_server.client() as client:
            actual = actual_state(client, EVENTS)
        # Nothing lost; what is counted twice is what the listeners handled in their last save
        # interval (0.2 s of their own pace, catching up on a backlog here): a part, never the whole.
        assert all(a >= e for a, e in zip(actual.histogram, expected.histogram, strict=True))
        assert sum(actual.histogram) - sum(expected.histogram) < sum(expected.histogram) / 2
    finally:
        first.kill()
        if second is not None:
            second.kill()
