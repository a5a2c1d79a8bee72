"""Resumed handlers (eventbus._resume) against real redis-server processes: positions kept in
Redis, what was published while a handler was down delivered after its restart, in order, once
after a clean stop and with bounded repeats after a crash."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from typing import Any

import pytest
import redis

from eventbus import Batch, Channel, Context, LoadError, Message, Reject, Runner, connect, on, on_pattern
from eventbus._history import parse_position, positions_key
from eventbus._metrics import StatsCollector
from eventbus._resume import SAVE_INTERVAL, identity_for
from eventbus.testing import TestBus
from tests.cli_process import EventbusProcess, run_eventbus
from tests.fault.helpers import eventually, running
from tests.redis_server import RedisServer

INVOICES = Channel("invoices", history=10_000)


def billing(channel: Channel = INVOICES, **options: Any) -> tuple[Any, list[int]]:
    seen: list[int] = []

    async def bill(msg: Message, ctx: Context) -> None:
        seen.append(int(msg.text))

    options.setdefault("name", "billing")
    return on(channel, resume=True, **options)(bill), seen


async def publish(url: str, channel: Channel, numbers: range) -> None:
    async with connect(url) as bus:
        for n in numbers:
            await bus.publish(channel, n)


def saved(server: RedisServer, channel: Channel, identity: str = "billing") -> Any:
    with server.client() as client:
        return parse_position(client.hget(positions_key(channel.name), identity))


async def test_a_clean_restart_delivers_what_was_published_while_down_once_in_order(
    redis_server: RedisServer,
) -> None:
    handler, seen = billing()
    async with running([handler], redis_server.url) as runner:
        await publish(redis_server.url, INVOICES, range(1, 101))
        await eventually(lambda: len(seen) == 100, what="the first 100")
    position = saved(redis_server, INVOICES)
    assert position is not None and position.offset == 100 and position.clean
    await publish(redis_server.url, INVOICES, range(101, 201))  # while it is down
    async with running([handler], redis_server.url) as runner:
        await publish(redis_server.url, INVOICES, range(201, 301))
        await eventually(lambda: len(seen) >= 300, what="all 300")
        assert await runner.drain(10)
        assert runner.stats.channels["invoices"].resumed == 100
        assert runner.stats.channels["invoices"].unclean_resumes == 0
    assert seen == list(range(1, 301))
    assert saved(redis_server, INVOICES).offset == 300


async def test_a_first_start_begins_at_the_top(redis_server: RedisServer) -> None:
    await publish(redis_server.url, INVOICES, range(1, 11))  # before the handler ever ran
    handler, seen = billing()
    async with running([handler], redis_server.url) as runner:
        await publish(redis_server.url, INVOICES, range(11, 21))
        await eventually(lambda: len(seen) == 10, what="the live ten")
        assert runner.stats.channels["invoices"].resumed == 0
    assert seen == list(range(11, 21))


async def test_a_handler_without_resume_on_the_same_channel_is_not_given_the_past(redis_server: RedisServer) -> None:
    handler, seen = billing()
    plain: list[int] = []

    @on(INVOICES, name="counter")
    async def count(msg: Message, ctx: Context) -> None:
        plain.append(int(msg.text))

    async with running([handler, count], redis_server.url):
        await publish(redis_server.url, INVOICES, range(1, 4))
        await eventually(lambda: len(seen) == len(plain) == 3, what="both")
    await publish(redis_server.url, INVOICES, range(4, 7))
    async with running([handler, count], redis_server.url) as runner:
        await publish(redis_server.url, INVOICES, range(7, 9))
        await eventually(lambda: len(seen) == 8 and len(plain) == 5, what="both")
        assert await runner.drain(10)
    assert seen == list(range(1, 9))
    assert plain == [1, 2, 3, 7, 8]


async def test_the_position_is_what_was_settled_not_what_was_queued(redis_server: RedisServer) -> None:
    """Messages waiting in the inbox when the grace period runs out are after the saved position:
    delivered again after the restart, not lost. Failures are settled (dead-lettered) and passed."""
    release = asyncio.Event()
    seen: list[int] = []

    @on(INVOICES, name="billing", resume=True)
    async def slow(msg: Message, ctx: Context) -> None:
        n = int(msg.text)
        if n == 2:
            raise Reject("refused")
        if n == 3:
            await release.wait()
        seen.append(n)

    async with running([slow], redis_server.url, grace=0.2):
        await publish(redis_server.url, INVOICES, range(1, 6))
        await eventually(lambda: seen == [1], what="the first")
        await asyncio.sleep(0.3)  # 3 is being handled, 4 and 5 wait; two save intervals pass
        assert saved(redis_server, INVOICES).offset == 2  # 1 handled, 2 dead-lettered: settled
    position = saved(redis_server, INVOICES)
    assert position.offset == 2 and position.clean
    release.set()
    async with running([slow], redis_server.url) as runner:
        await eventually(lambda: seen[-3:] == [3, 4, 5], what="3, 4 and 5 again")
        assert await runner.drain(10)
    assert seen == [1, 3, 4, 5]


async def test_a_resumed_handler_that_drops_reads_back_and_keeps_its_position(redis_server: RedisServer) -> None:
    release = asyncio.Event()
    seen: list[int] = []

    @on(INVOICES, name="billing", resume=True, overflow="drop_newest", inbox_size=5)
    async def bill(msg: Message, ctx: Context) -> None:
        await release.wait()
        seen.append(int(msg.text))

    async with running([bill], redis_server.url) as runner:
        await publish(redis_server.url, INVOICES, range(1, 31))
        await eventually(lambda: runner.stats.handlers["billing"].dropped > 0, what="drops")
        release.set()
        await eventually(lambda: len(seen) == 30, what="all 30")
    assert saved(redis_server, INVOICES).offset == 30
    async with running([bill], redis_server.url) as runner:
        await publish(redis_server.url, INVOICES, range(31, 33))
        await eventually(lambda: len(seen) == 32, what="two more")
        assert await runner.drain(10)
    assert seen == list(range(1, 33))


async def test_messages_trimmed_while_down_are_reported_and_passed(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    small = Channel("invoices", history=10)
    handler, seen = billing(small)
    async with running([handler], redis_server.url):
        await publish(redis_server.url, small, range(1, 3))
        await eventually(lambda: len(seen) == 2, what="two")
    with redis_server.client() as client:
        client.config_set("stream-node-max-entries", "1")  # exact trimming, so the bound is exact
    try:
        await publish(redis_server.url, small, range(3, 203))
    finally:
        with redis_server.client() as client:
            client.config_set("stream-node-max-entries", "100")
    with caplog.at_level(logging.WARNING, logger="eventbus.recovery"):
        async with running([handler], redis_server.url) as runner:
            await eventually(lambda: seen[-1:] == [202], what="the retained tail")
            assert await runner.drain(10)
            stats = runner.stats.channels["invoices"]
    assert seen[:2] == [1, 2] and seen[2:] == list(range(193, 203))
    assert stats.unrecovered == 190 and stats.resumed == 10
    assert "NOT recovered: 190 message(s) on 'invoices', offsets 3-192" in caplog.text
    assert saved(redis_server, small).offset == 202  # the next restart does not report them again


async def test_a_lost_history_while_down_is_reported(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    handler, seen = billing()
    async with running([handler], redis_server.url):
        await publish(redis_server.url, INVOICES, range(1, 4))
        await eventually(lambda: len(seen) == 3, what="three")
    with redis_server.client() as client:
        client.delete(*(key for key in client.keys("eventbus:history*") if b"pos" not in key))
    await publish(redis_server.url, INVOICES, range(4, 6))  # a new epoch, offsets 1 and 2
    with caplog.at_level(logging.WARNING, logger="eventbus.recovery"):
        async with running([handler], redis_server.url) as runner:
            await eventually(lambda: len(seen) == 5, what="the new history")
            assert runner.stats.channels["invoices"].history_lost == 1
    assert seen == [1, 2, 3, 4, 5]
    assert "the channel's history was lost" in caplog.text


async def test_two_runners_with_one_identity_never_overwrite_each_others_positions(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    first, seen_first = billing()
    second, seen_second = billing()
    with caplog.at_level(logging.ERROR, logger="eventbus.recovery"):
        async with running([first], redis_server.url):
            await publish(redis_server.url, INVOICES, range(1, 3))
            await eventually(lambda: len(seen_first) == 2, what="the first runner's two")
            await asyncio.sleep(SAVE_INTERVAL * 2)
            async with running([second], redis_server.url):
                await publish(redis_server.url, INVOICES, range(3, 5))
                await eventually(lambda: len(seen_first) == len(seen_second) + 2 == 4, what="both")
                await eventually(lambda: "claimed by another runner" in caplog.text, what="the earlier runner told")
            later = saved(redis_server, INVOICES)
            assert later is not None and later.offset == 4 and later.clean  # the later runner's stop
        # The earlier runner's clean stop did not write over the later one's position.
        assert saved(redis_server, INVOICES) == later
    assert caplog.text.count("claimed by another runner") == 1


async def test_each_worker_of_workers_n_keeps_its_own_position(monkeypatch: pytest.MonkeyPatch) -> None:
    assert identity_for("billing") == "billing"
    monkeypatch.setenv("EVENTBUS_WORKER", "1")
    assert identity_for("billing") == "billing#2"  # worker 2/N, numbered as the logs number them


async def test_a_batch_handler_resumes_message_by_message(redis_server: RedisServer) -> None:
    batches: list[list[int]] = []

    @on(INVOICES, name="billing", resume=True, batch=Batch(max_size=50, max_wait=0.05))
    async def bill(msgs: list[Message], ctx: Context) -> None:
        batches.append([int(m.text) for m in msgs])

    async with running([bill], redis_server.url):
        await publish(redis_server.url, INVOICES, range(1, 61))
        await eventually(lambda: sum(map(len, batches)) == 60, what="60")
    await publish(redis_server.url, INVOICES, range(61, 161))
    async with running([bill], redis_server.url) as runner:
        await eventually(lambda: sum(map(len, batches)) == 160, what="160")
        assert await runner.drain(10)
    assert [n for batch in batches for n in batch] == list(range(1, 161))


async def test_resume_metrics(redis_server: RedisServer) -> None:
    handler, seen = billing()
    async with running([handler], redis_server.url):
        await publish(redis_server.url, INVOICES, range(1, 3))
        await eventually(lambda: len(seen) == 2, what="two")
    await publish(redis_server.url, INVOICES, range(3, 6))
    async with running([handler], redis_server.url) as runner:
        await eventually(lambda: len(seen) == 5, what="five")
        samples = {
            (s.name, s.labels.get("channel")): s.value
            for family in StatsCollector(runner.stats).collect()
            for s in family.samples
        }
    assert samples[("eventbus_channel_resumed_total", "invoices")] == 3
    assert samples[("eventbus_channel_unclean_resumes_total", "invoices")] == 0


def test_resume_needs_recoverable_channels_and_never_evicts() -> None:
    def handler() -> Any:
        async def bill(msg: Message, ctx: Context) -> None: ...

        return bill

    with pytest.raises(LoadError, match="'orders' is a plain channel"):
        Runner([on("orders", resume=True)(handler())])
    with pytest.raises(LoadError, match=r"'ord\*' is a pattern"):
        Runner([on_pattern("ord*", resume=True)(handler())])
    with pytest.raises(LoadError, match="drop_oldest"):
        Runner([on(INVOICES, resume=True, overflow="drop_oldest")(handler())])
    runner = Runner([on(INVOICES, resume=True)(handler())])
    assert runner.router.handlers[0].options.overflow == "pause"  # never drops what it must not lose
    runner = Runner([on(INVOICES, resume=True, overflow="drop_newest")(handler())])
    assert runner.router.handlers[0].options.overflow == "drop_newest"


async def test_testbus_restart_resumes() -> None:
    handler, seen = billing()
    async with TestBus([handler]) as bus:
        await bus.publish(INVOICES, 1)
        await bus.drain()
        async with bus.restart():
            await bus.publish(INVOICES, 2)
        await bus.publish(INVOICES, 3)
        await bus.drain()
        assert bus.stats.channels["invoices"].resumed == 1
    assert seen == [1, 2, 3]


@pytest.mark.fault
def test_sigterm_and_sigkill_of_a_real_process_lose_nothing(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """A steady publisher (about 1,000/s) while the process is stopped with SIGTERM and restarted,
    then killed with SIGKILL and restarted: every message is billed; the clean stop repeats none,
    the crash repeats at most what was handled in the last save interval (and the in-flight)."""
    url = redis_server.url
    client = redis.Redis.from_url(url)
    top = 0

    def start() -> EventbusProcess:
        proc = EventbusProcess(["run", "tests.sample_apps.billing", "--url", url], subprocess_env)
        proc.wait_for("subscribed to 1 channel")
        return proc

    async def steady(count: int) -> None:
        nonlocal top
        async with connect(url) as bus:
            for _ in range(count):
                top += 1
                await bus.publish(Channel("invoices", history=100_000), top)
                if top % 10 == 0:
                    await asyncio.sleep(0.01)

    def published(count: int) -> None:
        asyncio.run(steady(count))

    def billed() -> list[int]:
        return [int(n) for n in client.lrange("billed", 0, -1)]

    first = start()
    try:
        published(500)
        first.signal(signal.SIGTERM)
        assert first.wait() == 0
        published(500)  # while nothing runs
        second = start()
        published(500)
        deadline = time.monotonic() + 20
        while len(billed()) < 1500 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert billed() == list(range(1, 1501))  # the clean stop: nothing lost, nothing repeated
        publishing = threading.Thread(target=published, args=(500,))
        publishing.start()
        time.sleep(0.25)
        second.process.kill()  # SIGKILL, mid-stream
        second.wait()
        publishing.join()
        third = start()
        published(500)
        total = top
        deadline = time.monotonic() + 20
        while len(set(billed())) < total and time.monotonic() < deadline:
            time.sleep(0.05)
        third.signal(signal.SIGTERM)
        assert third.wait() == 0
        assert "resuming after a crash" in third.output
    finally:
        for proc in ("first", "second", "third"):
            p = locals().get(proc)
            if p is not None:
                p.kill()
    numbers = billed()
    assert set(numbers) == set(range(1, total + 1))  # nothing lost
    first_seen = list(dict.fromkeys(numbers))
    assert first_seen == sorted(first_seen)  # in order
    repeats = len(numbers) - len(first_seen)
    print(f"repeats after the crash: {repeats}")
    # The crash: what was handled after the last save (0.2 s at ~1,000/s) is handled again.
    assert repeats <= 400, repeats


def test_routes_says_which_handlers_resume(subprocess_env: dict[str, str]) -> None:
    result = run_eventbus("routes", "tests.sample_apps.billing", env=subprocess_env)
    assert result.returncode == 0, result.stderr
    assert "invoices" in result.stdout and "recovers,resumes" in result.stdout
