"""The history's format and keys, and the in-memory history (TestBus) against Redis's semantics."""

from __future__ import annotations

import asyncio
import logging

import pytest

from eventbus import Channel, Context, Message, on, on_pattern
from eventbus._backends.memory import MemoryBroker, MemoryHistory
from eventbus._history import channel_of, envelope, history_keys, parse_envelope
from eventbus.testing import TestBus
from tests.fault.helpers import eventually

ORDERS = Channel("orders", history=5)


def test_envelope_round_trip_and_plain_payloads() -> None:
    data = envelope(42, b"1796619256163135", b'{"id": 1}')
    parsed = parse_envelope(data)
    assert parsed is not None and (parsed.offset, parsed.epoch, parsed.payload) == (
        42,
        b"1796619256163135",
        b'{"id": 1}',
    )
    assert parse_envelope(b'{"id": 1}') is None
    assert parse_envelope(b"\x00EBnot-an-offset:x:y") is None  # a binary payload that merely starts alike
    assert parse_envelope(b"\x00\x01\x02") is None


def test_keys_share_the_channels_slot() -> None:
    assert history_keys("orders") == ("eventbus:history:{orders}", "eventbus:history-top:{orders}")
    # A channel with a hash tag of its own keeps it, so channel and keys hash alike.
    assert history_keys("{user1}.orders") == (
        "eventbus:history:{user1}:{user1}.orders",
        "eventbus:history-top:{user1}:{user1}.orders",
    )


@pytest.mark.parametrize("channel", ["orders", "{user1}.orders", "{orders}", "a}:b", "a{}b", "x{y", "{}"])
def test_a_stream_key_names_its_channel(channel: str) -> None:
    assert channel_of(history_keys(channel)[0]) == channel
    assert channel_of("eventbus:history-top:{orders}") is None


async def test_memory_history_is_bounded_and_restarts_with_a_new_epoch() -> None:
    broker = MemoryBroker()
    history = MemoryHistory(broker)
    for n in range(1, 9):
        await history.publish(ORDERS, b"%d" % n)
    page = await history.read("orders", 1, 100)
    assert (page.top, page.first, page.payloads) == (8, 4, [b"4", b"5", b"6", b"7", b"8"])
    epoch = page.epoch
    broker.lose_history("orders")
    assert (await history.read("orders", 1, 100)).epoch == b""
    await history.publish(ORDERS, b"again")
    page = await history.read("orders", 1, 100)
    assert page.epoch != epoch and (page.first, page.payloads) == (1, [b"again"])


def handlers() -> tuple[list[object], dict[str, list[str]]]:
    seen: dict[str, list[str]] = {"channel": [], "pattern": []}

    @on(ORDERS)
    async def by_channel(msg: Message, ctx: Context) -> None:
        seen["channel"].append(msg.text)

    @on_pattern("ord*")
    async def by_pattern(msg: Message, ctx: Context) -> None:
        seen["pattern"].append(msg.text)

    return [by_channel, by_pattern], seen


async def test_testbus_recovers_a_gap_in_order() -> None:
    targets, seen = handlers()
    async with TestBus(targets) as bus:
        await bus.publish(ORDERS, "1")
        async with bus.gap():
            for n in range(2, 5):
                await bus.publish(ORDERS, str(n))
        await bus.publish(ORDERS, "5")
        await bus.drain()
        assert bus.published(ORDERS) == [b"1", b"2", b"3", b"4", b"5"]  # without the envelope
        assert bus.stats.channels["orders"].recovered == 6  # 3 missed, on each subscription
    assert seen["channel"] == ["1", "2", "3", "4", "5"]
    assert seen["pattern"] == ["1", "2", "3", "4", "5"]


async def test_testbus_reports_what_the_history_no_longer_has(caplog: pytest.LogCaptureFixture) -> None:
    targets, seen = handlers()
    async with TestBus(targets) as bus:
        await bus.publish(ORDERS, "1")
        async with bus.gap():
            for n in range(2, 10):  # the history keeps the last 5: 5-9
                await bus.publish(ORDERS, str(n))
        await bus.drain()
        assert bus.stats.channels["orders"].unrecovered == 6  # 2-4, on each subscription
    assert seen["channel"] == ["1", "5", "6", "7", "8", "9"]
    assert "NOT recovered: 3 message(s) on 'orders', offsets 2-4 (a reconnect)" in caplog.text


async def test_testbus_lost_history_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    targets, seen = handlers()
    caplog.set_level(logging.INFO, "eventbus")
    async with TestBus(targets) as bus:
        await bus.publish(ORDERS, "1")
        async with bus.gap():
            bus.lose_history(ORDERS)
        await bus.drain()
        await bus.publish(ORDERS, "2")
        await bus.drain()
        assert bus.stats.channels["orders"].history_lost == 2
    assert seen["channel"] == ["1", "2"]
    assert "the channel's history was lost" in caplog.text


async def test_testbus_replays_a_gap_longer_than_a_page_in_order() -> None:
    big = Channel("big", history=30_000)
    seen: list[int] = []

    @on(big)
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(int(msg.data))

    async with TestBus([record]) as bus:
        await bus.publish(big, 0)
        async with bus.gap():
            for n in range(1, 25_001):
                await bus.publish(big, n)
        await bus.publish(big, 25_001)
        await bus.drain()
        assert bus.stats.channels["big"].recovered == 25_000
    assert seen == list(range(25_002))


async def test_a_gap_before_the_first_message_ever_is_recovered() -> None:
    targets, seen = handlers()
    async with TestBus(targets) as bus:
        async with bus.gap():  # the channel has no history yet when the runner starts
            for n in range(1, 4):
                await bus.publish(ORDERS, str(n))
        await bus.drain()
    assert seen["channel"] == ["1", "2", "3"]


async def test_testbus_pattern_recovers_a_channel_first_published_in_a_gap() -> None:
    old, new = Channel("ord:old", history=10), Channel("ord:new", history=10)
    seen: dict[str, list[str]] = {"ord:old": [], "ord:new": []}

    @on_pattern("ord:*")
    async def record(msg: Message, ctx: Context) -> None:
        seen[msg.channel].append(msg.text)

    async with TestBus([record]) as bus:
        await bus.publish(old, "o1")
        async with bus.gap():
            await bus.publish(old, "o2")
            await bus.publish(new, "n1")  # the pattern never heard of ord:new before
            await bus.publish(new, "n2")
        await bus.drain()
        assert bus.stats.channels["ord:new"].recovered == 2
    assert seen == {"ord:old": ["o1", "o2"], "ord:new": ["n1", "n2"]}


async def test_testbus_reads_back_what_a_full_inbox_dropped() -> None:
    """A handler whose small inbox drops messages of a recoverable channel gets them back from the
    history, in order, each once; another handler on the channel is not held back meanwhile."""
    orders = Channel("orders", history=1000)
    release = asyncio.Event()
    slow_seen: list[int] = []
    fast_seen: list[int] = []

    @on(orders, name="slow", inbox_size=5)
    async def slow(msg: Message, ctx: Context) -> None:
        await release.wait()
        slow_seen.append(int(msg.text))

    @on(orders, name="fast")
    async def fast(msg: Message, ctx: Context) -> None:
        fast_seen.append(int(msg.text))

    async with TestBus([slow, fast]) as bus:
        for n in range(1, 51):
            await bus.publish(orders, n)
        await eventually(lambda: len(fast_seen) == 50)
        assert bus.handler_stats("slow").dropped > 0
        release.set()
        await bus.drain()
        assert bus.stats.channels["orders"].recovered >= bus.handler_stats("slow").dropped
    assert fast_seen == list(range(1, 51))
    assert slow_seen == list(range(1, 51))


async def test_testbus_reports_a_history_lost_without_a_gap(caplog: pytest.LogCaptureFixture) -> None:
    """As on Redis (tests/test_recovery.py::test_a_history_lost_without_a_gap_is_reported): the
    next publish begins an epoch marked as a loss; an expired history begins again unreported."""
    short = Channel("short", history=5, ttl=0.05)
    seen: list[str] = []

    @on(ORDERS, short)
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)

    caplog.set_level(logging.WARNING, "eventbus.recovery")
    async with TestBus([record]) as bus:
        await bus.publish(ORDERS, "1")
        await bus.publish(short, "a")
        await bus.drain()
        bus.lose_history(ORDERS)
        await asyncio.sleep(0.1)  # short's history expires
        await bus.publish(ORDERS, "2")
        await bus.publish(short, "b")
        await bus.drain()
        assert bus.stats.channels["orders"].history_lost == 1
        assert bus.stats.channels["short"].history_lost == 0
    assert [t for t in seen if t.isdigit()] == ["1", "2"] and [t for t in seen if not t.isdigit()] == ["a", "b"]
    assert "NOT recovered: messages on 'orders' published after offset 1" in caplog.text
    assert "'short'" not in caplog.text
