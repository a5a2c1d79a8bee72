"""Recoverable channels against real redis-server processes: gaps of every kind are recovered in
order, each message once, and what cannot be recovered is reported (eventbus._recovery)."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

import pytest

from eventbus import Channel, Context, LoadError, Message, Publisher, Runner, connect, on, on_pattern
from eventbus._history import history_keys, is_failover, previous_key
from eventbus._metrics import StatsCollector
from tests.fault.helpers import Proxy, eventually, running, wait_reconnected
from tests.histories import append_unpublished
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.fault]

ORDERS = Channel("orders", history=1000)


def recorder(channel: Channel | str = ORDERS, *, pattern: str | None = None) -> tuple[Any, list[int]]:
    seen: list[int] = []

    async def record(msg: Message, ctx: Context) -> None:
        seen.append(int(msg.text))

    if pattern is not None:
        return on_pattern(pattern, name=f"via {pattern}")(record), seen
    handler = on(channel)(record)
    return handler, seen


async def publish_range(runner: Runner | Publisher, channel: Channel, numbers: range) -> None:
    publisher = runner.publisher if isinstance(runner, Runner) else runner
    assert publisher is not None
    for n in numbers:
        await publisher.publish(channel, n)


async def publish_in_a_gap(runner: Runner, proxy: Proxy, url: str, channel: Channel, numbers: range) -> None:
    """Publish ``numbers`` (from another client) while the runner's path to Redis swallows
    everything; return once the ping has replaced its connection."""
    proxy.blackhole = True
    async with connect(url) as producer:
        await publish_range(producer, channel, numbers)
    await eventually(lambda: not runner.subscriber.is_connected(), what="the half-open connection noticed")  # type: ignore[union-attr]
    proxy.blackhole = False
    await wait_reconnected(runner)


async def delivered(seen: list[int], count: int) -> None:
    await eventually(lambda: len(seen) >= count, what=f"{count} messages (have {len(seen)})")


async def test_client_kill_while_publishing_loses_nothing(own_redis_server: RedisServer) -> None:
    """The subscription connection is killed three times while a publisher keeps going: every
    message arrives once, in publish order."""
    handler, seen = recorder()
    async with running([handler], own_redis_server.url) as runner:
        publishing = asyncio.create_task(publish_range(runner, ORDERS, range(1, 3001)))
        with own_redis_server.client() as admin:
            for kills in range(1, 4):
                await eventually(lambda k=kills: len(seen) >= 500 * k, what="progress before a kill")  # type: ignore[misc]
                admin.client_kill_filter(_type="pubsub")
                await wait_reconnected(runner, kills)
        await publishing
        await delivered(seen, 3000)
        assert await runner.drain(10)
    assert seen == list(range(1, 3001))
    stats = runner.stats.channels["orders"]
    assert stats.unrecovered == 0 and stats.history_lost == 0
    assert stats.recoveries >= 3


async def test_half_open_connection_recovers_what_it_swallowed(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Messages published while the path to Redis swallows everything are read back once the ping
    has replaced the connection: first the missed ones, then the live ones, in order."""
    caplog.set_level(logging.INFO, "eventbus")
    proxy = await Proxy(own_redis_server.port).start()
    handler, seen = recorder()
    pattern_handler, via_pattern = recorder(pattern="ord*")
    try:
        async with running([handler, pattern_handler], proxy.url) as runner:
            await publish_range(runner, ORDERS, range(1, 11))
            await delivered(seen, 10)
            await delivered(via_pattern, 10)
            await publish_in_a_gap(runner, proxy, own_redis_server.url, ORDERS, range(11, 111))
            await publish_range(runner, ORDERS, range(111, 121))
            await delivered(seen, 120)
            await delivered(via_pattern, 120)
            assert await runner.drain(10)
    finally:
        await proxy.close()
    assert seen == list(range(1, 121))
    assert via_pattern == list(range(1, 121))
    assert runner.stats.channels["orders"].recovered >= 200  # 100 missed, on each subscription
    assert "recovered 100 message(s) on 'orders' missed after offset 10 (a reconnect); 0 not recovered" in caplog.text


async def test_a_pattern_recovers_a_channel_first_published_during_a_gap(own_redis_server: RedisServer) -> None:
    """The pattern never received a message from ``ord:new`` (it did not exist) nor from ``ord:old``
    (it existed, silent, before the start): both are published only while the connection is down,
    and both are recovered, ``ord:old`` from where it stood at the start."""
    old, new = Channel("ord:old", history=100), Channel("ord:new", history=100)
    async with connect(own_redis_server.url) as producer:
        await publish_range(producer, old, range(1, 6))  # before the start: not the pattern's
    proxy = await Proxy(own_redis_server.port).start()
    seen: dict[str, list[int]] = {"ord:old": [], "ord:new": []}

    @on_pattern("ord:*")
    async def record(msg: Message, ctx: Context) -> None:
        seen[msg.channel].append(int(msg.text))

    try:
        async with running([record], proxy.url) as runner:
            proxy.blackhole = True
            async with connect(own_redis_server.url) as producer:
                await publish_range(producer, old, range(6, 11))
                await publish_range(producer, new, range(1, 21))
            await eventually(lambda: not runner.subscriber.is_connected(), what="the half-open connection noticed")  # type: ignore[union-attr]
            proxy.blackhole = False
            await wait_reconnected(runner)
            async with connect(own_redis_server.url) as producer:
                await publish_range(producer, new, range(21, 26))
            await eventually(lambda: len(seen["ord:new"]) >= 25 and len(seen["ord:old"]) >= 5, what="both channels")
            assert await runner.drain(10)
    finally:
        await proxy.close()
    assert seen == {"ord:old": list(range(6, 11)), "ord:new": list(range(1, 26))}
    assert runner.stats.channels["ord:new"].recovered == 20


async def test_a_pattern_delivers_a_new_channel_that_starts_while_it_searches(redis_server: RedisServer) -> None:
    """Channels created around the start's search are neither skipped nor repeated."""
    channels = [Channel(f"ord:{i}", history=100) for i in range(20)]
    seen: dict[str, list[int]] = {}

    @on_pattern("ord:*")
    async def record(msg: Message, ctx: Context) -> None:
        seen.setdefault(msg.channel, []).append(int(msg.text))

    async with connect(redis_server.url) as producer:
        await publish_range(producer, channels[0], range(1, 3))  # before the start: not the pattern's

        async def keep_publishing() -> None:
            for n in range(3, 43):
                for channel in channels:
                    await producer.publish(channel, n)
                await asyncio.sleep(0.001)

        publishing = asyncio.create_task(keep_publishing())
        async with running([record], redis_server.url) as runner:
            await publishing
            await eventually(lambda: all(seen.get(c.name, [0])[-1] == 42 for c in channels), what="every channel")
            assert await runner.drain(10)
    for channel in channels:
        numbers = seen[channel.name]
        assert numbers == list(range(numbers[0], 43)), channel.name  # from its first, in order, each once


async def test_a_full_inbox_reads_what_it_dropped_back_from_the_history(redis_server: RedisServer) -> None:
    """drop_newest on a recoverable channel: the dropped messages, and those after them, are read
    back once the inbox has room, in order, each once; another handler is not held back."""
    release = asyncio.Event()
    slow_seen: list[int] = []
    fast_seen: list[int] = []

    @on(ORDERS, name="slow", inbox_bytes=2_000)
    async def slow(msg: Message, ctx: Context) -> None:
        await release.wait()
        slow_seen.append(int(msg.text))

    @on(ORDERS, name="fast")
    async def fast(msg: Message, ctx: Context) -> None:
        fast_seen.append(int(msg.text))

    async with running([slow, fast], redis_server.url) as runner:
        await publish_range(runner, ORDERS, range(1, 501))
        await delivered(fast_seen, 500)
        assert runner.stats.handlers["slow"].dropped > 0
        release.set()
        await delivered(slow_seen, 500)
        assert await runner.drain(10)
        stats = runner.stats.channels["orders"]
        assert stats.recovered >= runner.stats.handlers["slow"].dropped and stats.unrecovered == 0
    assert fast_seen == list(range(1, 501))
    assert slow_seen == list(range(1, 501))


async def test_trimmed_history_is_reported_not_recovered(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis keeps at least ``history`` entries (it trims whole blocks): what it no longer has is
    reported, with the count and the offsets, and the rest is delivered in order."""
    short = Channel("short", history=5)
    handler, seen = recorder(short)
    proxy = await Proxy(own_redis_server.port).start()
    try:
        async with running([handler], proxy.url) as runner:
            await publish_range(runner, short, range(1, 3))
            await delivered(seen, 2)
            await publish_in_a_gap(runner, proxy, own_redis_server.url, short, range(3, 1003))
            await publish_range(runner, short, range(1003, 1004))
            await eventually(lambda: seen[-1:] == [1003], what="the last message")
            assert await runner.drain(10)
    finally:
        await proxy.close()
    first = seen[2]
    assert seen == [1, 2, *range(first, 1004)]
    assert first > 3
    stats = runner.stats.channels["short"]
    assert stats.unrecovered == first - 3
    assert stats.recovered == 1002 - first + 1
    assert f"NOT recovered: {first - 3} message(s) on 'short', offsets 3-{first - 1} (a reconnect)" in caplog.text
    warning = next(r for r in caplog.records if "NOT recovered" in r.getMessage())
    assert warning.levelno == logging.WARNING


async def test_an_offset_jump_is_read_from_the_history(redis_server: RedisServer) -> None:
    """A message that never arrived (here: appended to the history without being published) is
    found by the next one's offset and delivered before it."""
    handler, seen = recorder()
    async with running([handler], redis_server.url) as runner:
        await publish_range(runner, ORDERS, range(1, 4))
        await delivered(seen, 3)
        with redis_server.client() as admin:
            assert append_unpublished(admin, "orders", b"4") == 4
        await publish_range(runner, ORDERS, range(5, 7))
        await delivered(seen, 6)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert runner.stats.channels["orders"].recovered == 1


async def test_restart_without_persistence_reports_the_lost_history(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    handler, seen = recorder()
    async with running([handler], own_redis_server.url) as runner:
        await publish_range(runner, ORDERS, range(1, 4))
        await delivered(seen, 3)
        own_redis_server.kill()
        own_redis_server.start()
        await wait_reconnected(runner)
        await eventually(lambda: runner.stats.channels["orders"].history_lost == 1, what="the lost history noticed")
        await publish_range(runner, ORDERS, range(4, 7))  # a new epoch, from offset 1
        await delivered(seen, 6)
    assert seen == [1, 2, 3, 4, 5, 6]
    assert "the channel's history was lost (its epoch changed" in caplog.text


async def test_a_promoted_replica_starts_a_new_epoch(own_redis_server: RedisServer) -> None:
    """Replication never carries the master's own record of its top offset (the top key): a promoted
    replica's first publish cannot go on with a copy that may lack the newest messages, and begins
    a new epoch, marked as a failover's (tests/scaling/test_cluster_failover.py: what subscribers
    make of it)."""
    stream, top = history_keys("orders")
    with own_redis_server.client() as admin:
        admin.config_set("repl-diskless-sync-delay", 0)
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(own_redis_server.port)]).start()
    try:
        async with connect(own_redis_server.url) as producer:
            await publish_range(producer, ORDERS, range(1, 4))
        with replica.client() as copy, own_redis_server.client() as master:
            await eventually(lambda: copy.xlen(stream) == 3, what="the replica's copy")
            [(last, _)] = master.xrevrange(stream, count=1)
            epoch, _, offset = last.partition(b"-")
            assert offset == b"3" and master.get(top) == b"3" and copy.get(top) is None
            copy.replicaof("NO", "ONE")
            async with connect(replica.url) as producer:
                await publish_range(producer, ORDERS, range(4, 5))
            [(new_id, fields)] = copy.xrange(stream)
            new_epoch, _, new_offset = new_id.partition(b"-")
            assert new_epoch != epoch and is_failover(new_epoch) and not is_failover(epoch)
            assert new_offset == b"1" and fields == {b"d": b"4"} and copy.get(top) == b"1"
            # Its copy of the old epoch is kept aside for subscribers positioned in it.
            assert [f[b"d"] for _, f in copy.xrange(previous_key("orders"))] == [b"1", b"2", b"3"]
    finally:
        replica.stop()


async def test_publishers_follow_the_history_s_epoch(redis_server: RedisServer) -> None:
    """Each publisher names the epoch it last saw: one that missed a new epoch (the keys were lost
    and another publisher began it) joins it instead of beginning yet another, offsets in turn.
    The history lost under a publisher that knew it begins an epoch marked as a loss."""
    stream, top = history_keys("orders")
    async with connect(redis_server.url) as first, connect(redis_server.url) as second:
        await publish_range(first, ORDERS, range(1, 3))
        await publish_range(second, ORDERS, range(3, 4))  # learns the epoch from the stream
        with redis_server.client() as admin:
            [(old_id, _)] = admin.xrevrange(stream, count=1)
            assert old_id.endswith(b"-3")
            admin.delete(stream, top)  # lost, as by a restart without persistence
            await publish_range(first, ORDERS, range(4, 5))  # begins a new epoch at 1
            await publish_range(second, ORDERS, range(5, 6))  # named the old one: refused, joins
            await publish_range(first, ORDERS, range(6, 7))
            entries = admin.xrange(stream)
    epochs = {entry_id.partition(b"-")[0] for entry_id, _ in entries}
    [epoch] = epochs
    assert epoch != old_id.partition(b"-")[0] and int(epoch) > int(old_id.partition(b"-")[0])
    assert is_failover(epoch)
    assert [(entry_id.partition(b"-")[2], fields[b"d"]) for entry_id, fields in entries] == [
        (b"1", b"4"),
        (b"2", b"5"),
        (b"3", b"6"),
    ]


async def test_restart_with_persistence_recovers_across_it(tmp_path: Any) -> None:
    """History kept by the server (AOF) across its restart: what was published after the
    subscriber lost its connection, before and after the restart, is recovered."""
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    handler, seen = recorder()
    try:
        async with running([handler], server.url) as runner:
            await publish_range(runner, ORDERS, range(1, 4))
            await delivered(seen, 3)
            assert server.process is not None
            server.process.terminate()  # a clean stop writes everything; a start reads it back
            server.process.wait(10)
            server.process = None
            server.start()
            async with connect(server.url) as producer:
                await publish_range(producer, ORDERS, range(4, 9))  # possibly before the subscriber is back
            await delivered(seen, 8)
    finally:
        server.stop()
    assert seen == [1, 2, 3, 4, 5, 6, 7, 8]
    assert runner.stats.channels["orders"].history_lost == 0


async def test_a_plain_publish_on_a_recoverable_channel_is_delivered_and_warned_once(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []

    @on(ORDERS)
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)

    async with running([record], redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish(ORDERS, "kept")
        with redis_server.client() as admin:
            admin.publish("orders", "plain-1")
            admin.publish("orders", "plain-2")
        await runner.publisher.publish(ORDERS, "kept-2")
        await eventually(lambda: len(seen) == 4)
    assert seen == ["kept", "plain-1", "plain-2", "kept-2"]
    assert runner.stats.channels["orders"].foreign == 2
    assert caplog.text.count("was published without its history") == 1


async def test_plain_channels_and_patterns_see_no_envelope(redis_server: RedisServer) -> None:
    """A handler subscribed with a plain string to a channel published with history gets the
    payload alone, and recovers too (the envelope says the channel is recoverable)."""
    handler, seen = recorder("orders")
    async with running([handler], redis_server.url) as runner:
        await publish_range(runner, ORDERS, range(1, 4))
        assert runner.publisher is not None
        await runner.publisher.publish("orders", 4)
        await delivered(seen, 4)
    assert seen == [1, 2, 3, 4]


async def test_the_history_is_bounded_and_expires(redis_server: RedisServer) -> None:
    """At least ``history`` entries are kept, whole blocks of older ones trimmed; both keys expire."""
    channel = Channel("bounded", history=3, ttl=30)
    async with connect(redis_server.url) as producer:
        await publish_range(producer, channel, range(1, 1001))
    stream, top = history_keys("bounded")
    with redis_server.client() as admin:
        ids = [int(entry_id.split(b"-")[1]) for entry_id, _ in admin.xrange(stream)]
        assert 3 <= len(ids) < 300 and ids == list(range(ids[0], 1001))
        assert admin.get(top) == b"1000"
        assert 0 < admin.ttl(stream) <= 30 and 0 < admin.ttl(top) <= 30


async def test_recovery_metrics(own_redis_server: RedisServer) -> None:
    short = Channel("short", history=2)
    handler, seen = recorder(short)
    proxy = await Proxy(own_redis_server.port).start()
    try:
        async with running([handler], proxy.url) as runner:
            await publish_range(runner, short, range(1, 2))
            await delivered(seen, 1)
            await publish_in_a_gap(runner, proxy, own_redis_server.url, short, range(2, 502))
            await eventually(lambda: seen[-1:] == [501], what="the last message")
    finally:
        await proxy.close()
    samples = {
        (s.name, s.labels.get("channel")): s.value
        for family in StatsCollector(runner.stats).collect()
        for s in family.samples
    }
    recovered = samples[("eventbus_channel_recovered_total", "short")]
    unrecovered = samples[("eventbus_channel_unrecovered_total", "short")]
    assert recovered == len(seen) - 1 and recovered + unrecovered == 500 and unrecovered > 0
    assert samples[("eventbus_channel_recoveries_total", "short")] >= 1
    assert samples[("eventbus_channel_recovery_seconds_total", "short")] > 0
    assert samples[("eventbus_channel_foreign_total", "short")] == 0
    assert samples[("eventbus_channel_history_lost_total", "short")] == 0


async def test_a_steady_publisher_through_kills_freezes_and_output_buffer_drops(own_redis_server: RedisServer) -> None:
    """About 1,000 messages/s while the subscription connection is killed, Redis is frozen past the
    ping deadline, and Redis drops the subscriber past a small output-buffer limit: every message
    arrives once, in order. A few seconds by default; EVENTBUS_FAULT_SECONDS=60 runs the long one."""
    seconds = float(os.environ.get("EVENTBUS_FAULT_SECONDS", "3"))
    channel = Channel("steady", history=100_000)
    handler, seen = recorder(channel)
    total = int(seconds * 1000)
    async with running([handler], own_redis_server.url) as runner:
        assert runner.publisher is not None
        publisher = runner.publisher

        async def steady() -> None:
            for n in range(1, total + 1):
                await publisher.publish(channel, n)
                if n % 10 == 0:
                    await asyncio.sleep(0.01)

        publishing = asyncio.create_task(steady())
        faults = 0
        subscriber = runner.subscriber
        assert subscriber is not None
        with own_redis_server.client() as admin:
            while not publishing.done():
                step = faults % 3
                if step == 0:
                    admin.client_kill_filter(_type="pubsub")
                elif step == 1:
                    own_redis_server.pause()  # until the ping finds the connection dead
                    await eventually(lambda: not subscriber.is_connected(), what="the freeze noticed")
                    own_redis_server.resume()
                else:
                    admin.config_set("client-output-buffer-limit", "pubsub 64kb 0 0")
                    protocol = subscriber._protocol  # type: ignore[attr-defined]
                    protocol.pause_reading()  # not reading, as a stopped process would not
                    await eventually(lambda p=protocol: p.lost.done(), what="Redis dropping the subscriber")  # type: ignore[misc]
                    admin.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
                faults += 1
                await wait_reconnected(runner, faults)
                before = len(seen)
                await eventually(lambda b=before: len(seen) > b + 50 or publishing.done(), what="progress")  # type: ignore[misc]
        await publishing
        try:
            await delivered(seen, total)
        finally:
            print("MISSING", sorted(set(range(1, total + 1)) - set(seen)), "DUPS", len(seen) - len(set(seen)))
            print("STATS", runner.stats.channels["steady"])
        assert await runner.drain(10)
    assert seen == list(range(1, total + 1))
    stats = runner.stats.channels["steady"]
    assert stats.unrecovered == 0 and stats.history_lost == 0
    assert faults >= 3


def test_a_recoverable_channel_never_evicts_queued_messages() -> None:
    """``drop_oldest`` would evict messages that could only come back out of order: refused at load
    on a recoverable channel, with what to use instead; plain channels and patterns keep it."""

    def handler() -> Any:
        async def count(msg: Message, ctx: Context) -> None: ...

        return count

    with pytest.raises(LoadError, match=r"drop_oldest.*recoverable channel 'orders'.*drop_newest"):
        Runner([on("plain", ORDERS, overflow="drop_oldest")(handler())])
    for subscribed in (on("plain", overflow="drop_oldest"), on_pattern("ord*", overflow="drop_oldest")):
        assert Runner([subscribed(handler())]).router.handlers[0].options.overflow == "drop_oldest"
    assert Runner([on(ORDERS)(handler())]).router.handlers[0].options.overflow == "drop_newest"


async def test_an_expired_history_begins_again_without_a_loss(redis_server: RedisServer) -> None:
    """An idle channel's history expires with its ttl, as it should: the next publish begins an
    epoch that is not taken for a loss; within the ttl, a missing history is one."""
    short = Channel("short-lived", history=10, ttl=0.3)
    stream, _ = history_keys(short.name)

    def epoch_now(admin: Any) -> bytes:
        [(entry_id, _)] = admin.xrevrange(stream, count=1)
        return bytes(entry_id.partition(b"-")[0])

    async with connect(redis_server.url) as producer:
        await producer.publish(short, 1)
        with redis_server.client() as admin:
            first = epoch_now(admin)
            await eventually(lambda: not admin.exists(stream), what="the history's expiry")
            await producer.publish(short, 2)
            second = epoch_now(admin)
            assert second != first and not is_failover(second)
            admin.delete(stream)  # lost within the ttl: not an expiry
            await producer.publish(short, 3)
            third = epoch_now(admin)
            assert third != second and is_failover(third)


async def test_a_history_lost_without_a_gap_is_reported(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber whose connection never broke (on a cluster: connected to another node) while
    the node holding the history lost it (a promoted replica without a copy): the publisher's next
    message begins an epoch marked as a loss, and the subscriber reports it instead of taking the
    new history for a fresh one."""
    handler, seen = recorder()
    with caplog.at_level(logging.WARNING, logger="eventbus.recovery"):
        async with running([handler], redis_server.url) as runner:
            await publish_range(runner, ORDERS, range(1, 4))
            await delivered(seen, 3)
            with redis_server.client() as admin:
                admin.delete(*history_keys("orders"))
            await publish_range(runner, ORDERS, range(4, 6))
            await delivered(seen, 5)
            assert runner.stats.channels["orders"].history_lost == 1
    assert seen == [1, 2, 3, 4, 5]
    assert "NOT recovered: messages on 'orders' published after offset 3" in caplog.text


async def test_a_gap_across_a_failover_recovers_what_the_replica_kept(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A subscriber in a gap while a replica without the master's record takes over (here: its top
    key deleted, as a promoted replica has none): the old epoch's copy is kept aside, so the
    subscriber recovers what it holds after its position, reports only what may lie past it, and
    goes on with the new epoch."""
    caplog.set_level(logging.INFO, "eventbus.recovery")
    proxy = await Proxy(own_redis_server.port).start()
    handler, seen = recorder()
    stream, top = history_keys("orders")
    try:
        async with running([handler], proxy.url) as runner, connect(own_redis_server.url) as producer:
            await publish_range(producer, ORDERS, range(1, 4))
            await delivered(seen, 3)
            proxy.blackhole = True
            await publish_range(producer, ORDERS, range(4, 7))  # in the copy the replica will have
            with own_redis_server.client() as admin:
                admin.delete(top)
                await publish_range(producer, ORDERS, range(7, 8))  # the promoted replica's first
                kept = [(i.partition(b"-")[2], f[b"d"]) for i, f in admin.xrange(previous_key("orders"))]
                assert kept == [(b"%d" % n, b"%d" % n) for n in range(1, 7)]
                assert [f[b"d"] for _, f in admin.xrange(stream)] == [b"7"]
            await eventually(lambda: not runner.subscriber.is_connected(), what="the gap noticed")  # type: ignore[union-attr]
            proxy.blackhole = False
            await wait_reconnected(runner)
            await delivered(seen, 7)
            assert runner.stats.channels["orders"].history_lost == 1
            assert runner.stats.channels["orders"].recovered == 4  # 4-6 from the copy kept aside, 7
    finally:
        await proxy.close()
    assert seen == [1, 2, 3, 4, 5, 6, 7]
    assert "NOT recovered: messages on 'orders' published after offset 6" in caplog.text
