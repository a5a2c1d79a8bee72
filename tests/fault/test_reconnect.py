"""Connection loss on the subscription connection: the runner reconnects, resubscribes, loses nothing queued.

Every scenario ends the same way: messages published after recovery all arrive, on a channel and
on a pattern subscription, and the handler's command client (ctx.redis) works again.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from eventbus import Context, Message, Runner, on, on_pattern
from tests.fault.helpers import Proxy, eventually, publish_all, running, wait_reconnected
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.fault, pytest.mark.both_loops]


def terminate(server: RedisServer) -> None:
    assert server.process is not None
    server.process.terminate()
    server.process.wait(10)
    server.process = None


def make_handlers() -> tuple[list[object], dict[str, list[str]]]:
    seen: dict[str, list[str]] = {"orders": [], "pattern": []}

    @on("orders")
    async def orders(msg: Message, ctx: Context) -> None:
        seen["orders"].append(msg.text)
        await ctx.redis.incr("orders:count")

    @on_pattern("ord*")
    async def pattern(msg: Message, ctx: Context) -> None:
        seen["pattern"].append(msg.text)

    return [orders, pattern], seen


async def assert_recovered(runner: Runner, seen: dict[str, list[str]], tag: str, n: int = 50) -> None:
    """After recovery every message published arrives once per subscription, and ctx.redis works."""
    before = {k: len(v) for k, v in seen.items()}
    payloads = [f"{tag}-{i}" for i in range(n)]
    await publish_all(runner, "orders", payloads)
    await eventually(lambda: all(len(seen[k]) - before[k] >= n for k in seen), what="messages after recovery")
    assert seen["orders"][before["orders"] :] == payloads  # concurrency=1: publish order kept
    assert seen["pattern"][before["pattern"] :] == payloads
    assert await runner.drain(10)
    assert runner.subscriber is not None
    assert all(s.failed == 0 and s.dropped == 0 for s in runner.stats.handlers.values())


async def test_sigkill_and_restart_on_the_same_port(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    handlers, seen = make_handlers()
    caplog.set_level(logging.INFO, "eventbus")
    async with running(handlers, own_redis_server.url) as runner:
        await assert_recovered(runner, seen, "before")
        own_redis_server.kill()
        subscriber = runner.subscriber
        await eventually(lambda: not subscriber.connected.is_set(), what="the outage noticed")  # type: ignore[union-attr]
        noticed = time.monotonic()
        # A real outage: reconnect attempts fail meanwhile.
        await eventually(lambda: "reconnect attempt 2 to" in caplog.text, what="two failed reconnect attempts")
        outage = time.monotonic() - noticed
        own_redis_server.start()
        await wait_reconnected(runner)
        await assert_recovered(runner, seen, "after")
        # The restarted server lost its data; the counter restarts from what arrived since.
        assert int(await runner.redis.get("orders:count")) == 50
    text = caplog.text
    assert "at-most-once" in text
    assert "after a gap of" in text
    assert runner.stats.gap_seconds >= outage  # from the loss to the resubscription


async def test_client_kill_of_the_pubsub_connection(own_redis_server: RedisServer) -> None:
    handlers, seen = make_handlers()
    async with running(handlers, own_redis_server.url) as runner:
        with own_redis_server.client() as admin:
            assert admin.client_kill_filter(_type="pubsub") == 1
        await wait_reconnected(runner)
        await assert_recovered(runner, seen, "after-kill")
        with own_redis_server.client() as admin:
            # Still exactly one subscription connection: the old one is not leaked.
            pubsub_clients = [c for c in admin.client_list() if c.get("name", "").startswith("eventbus-sub")]
            assert len(pubsub_clients) == 1
            assert admin.pubsub_numsub("orders") == [(b"orders", 1)]
            assert admin.pubsub_numpat() == 1


async def test_graceful_server_restart(own_redis_server: RedisServer) -> None:
    handlers, seen = make_handlers()
    async with running(handlers, own_redis_server.url) as runner:
        for round_ in range(2):
            terminate(own_redis_server)  # SIGTERM: the server closes its connections itself
            own_redis_server.start()
            await wait_reconnected(runner, round_ + 1)
            await assert_recovered(runner, seen, f"restart-{round_}")
        assert runner.stats.reconnects == 2


async def test_sigstop_is_detected_by_the_ping_deadline(own_redis_server: RedisServer) -> None:
    handlers, seen = make_handlers()
    async with running(handlers, own_redis_server.url) as runner:
        await assert_recovered(runner, seen, "before")
        own_redis_server.pause()
        try:
            # Half-open: the socket stays up, nothing answers. Only the PING deadline notices.
            assert runner.subscriber is not None
            subscriber = runner.subscriber
            await eventually(lambda: not subscriber.connected.is_set(), what="the half-open connection noticed")  # type: ignore[attr-defined]
        finally:
            own_redis_server.resume()
        await wait_reconnected(runner)
        await assert_recovered(runner, seen, "after")


async def test_blackholing_proxy_is_detected_and_recovered(own_redis_server: RedisServer) -> None:
    handlers, seen = make_handlers()
    proxy = await Proxy(own_redis_server.port).start()
    try:
        async with running(handlers, proxy.url) as runner:
            await assert_recovered(runner, seen, "before")
            proxy.blackhole = True
            subscriber = runner.subscriber
            await eventually(lambda: not subscriber.connected.is_set(), what="the blackhole noticed")  # type: ignore[union-attr]
            # Waits for something NOT to happen: no reconnect may count while the blackhole lasts.
            await asyncio.sleep(1.0)
            assert runner.stats.reconnects == 0
            proxy.blackhole = False
            await wait_reconnected(runner)
            await assert_recovered(runner, seen, "after")
    finally:
        await proxy.close()


async def test_handler_work_in_flight_survives_a_reconnect(own_redis_server: RedisServer) -> None:
    release = asyncio.Event()
    done: list[str] = []
    started = asyncio.Event()

    @on("jobs")
    async def slow(msg: Message, ctx: Context) -> None:
        started.set()
        await release.wait()
        # The command client is used after the outage, from work that started before it.
        await ctx.redis.rpush("done", msg.data)
        done.append(msg.text)

    async with running([slow], own_redis_server.url) as runner:
        await publish_all(runner, "jobs", [f"job-{i}" for i in range(5)])
        await asyncio.wait_for(started.wait(), 10)
        await eventually(lambda: len(runner.workers[0].inbox) == 4, what="four queued")
        own_redis_server.kill()
        own_redis_server.start()
        await wait_reconnected(runner)
        release.set()
        await eventually(lambda: len(done) == 5, what="the in-flight and queued jobs")
        await publish_all(runner, "jobs", [f"job-{i}" for i in range(5, 10)])
        await eventually(lambda: len(done) == 10, what="jobs after recovery")
        assert done == [f"job-{i}" for i in range(10)]
        (stats,) = runner.stats.handlers.values()
        assert (stats.handled, stats.failed, stats.dropped) == (10, 0, 0)
        assert await runner.redis.llen("done") == 10


async def test_command_client_rides_out_an_outage(own_redis_server: RedisServer) -> None:
    """A handler's ctx.redis command issued while the server is down succeeds once it is back."""
    results: list[int] = []

    @on("count")
    async def count(msg: Message, ctx: Context) -> None:
        results.append(await ctx.redis.incr("n"))

    async with running([count], own_redis_server.url) as runner:
        await publish_all(runner, "count", [1])
        await eventually(lambda: results == [1], what="first message")
        own_redis_server.kill()
        subscriber = runner.subscriber
        await eventually(lambda: not subscriber.connected.is_set(), what="the outage noticed")  # type: ignore[union-attr]
        # A command issued during the outage (not one already sent when the connection dropped:
        # that one may have run, so it fails rather than being replayed) waits for the server.
        ctx_redis = runner.redis
        lanes = getattr(ctx_redis, "_lanes", [])
        await eventually(lambda: not any(lane.connected for lane in lanes), what="the command client's outage")
        pending = asyncio.create_task(ctx_redis.incr("n"))
        await asyncio.sleep(0.5)  # waits for something NOT to happen: the command must not fail meanwhile
        assert not pending.done()
        own_redis_server.start()
        assert await asyncio.wait_for(pending, 20) == 1  # the restarted server starts empty
        await wait_reconnected(runner)
        await publish_all(runner, "count", [2])
        await eventually(lambda: results == [1, 2], what="message after recovery")


async def test_repeated_reconnects_leak_nothing(own_redis_server: RedisServer) -> None:
    """Ten kills in a row: no task, connection or pending-reply growth; still delivering."""
    handlers, seen = make_handlers()
    async with running(handlers, own_redis_server.url) as runner:
        await assert_recovered(runner, seen, "warm-up")
        tasks_before = len(asyncio.all_tasks())
        with own_redis_server.client() as admin:
            clients_before = len(admin.client_list())
            for round_ in range(10):
                admin.client_kill_filter(_type="pubsub")
                await wait_reconnected(runner, round_ + 1)
            await assert_recovered(runner, seen, "after-ten")
            assert len(admin.client_list()) == clients_before
        assert len(asyncio.all_tasks()) == tasks_before
        subscriber = runner.subscriber
        assert len(subscriber._protocol.pending) <= 1  # type: ignore[union-attr]  # at most one PING
        assert runner.stats.reconnects == 10


async def test_a_message_past_the_output_buffer_limit_is_named_counted_and_survived(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """One message over 32 MB: Redis (default config) drops the subscriber without a word."""
    from tests.test_metrics import scrape

    caplog.set_level(logging.INFO, "eventbus")
    sizes: list[int] = []

    @on("big")
    async def big(msg: Message, ctx: Context) -> None:
        sizes.append(len(msg.data))

    with own_redis_server.client() as admin:
        limit = admin.config_get("client-output-buffer-limit")["client-output-buffer-limit"]
    assert "pubsub 33554432 8388608 60" in limit  # the default: nothing configured for this test
    async with running([big], own_redis_server.url, metrics_port=0, metrics_addr="127.0.0.1") as runner:
        await publish_all(runner, "big", [b"small"])
        await eventually(lambda: sizes == [5], what="a small message first")

        def publish_huge() -> int:
            with own_redis_server.client() as client:
                return int(client.publish("big", b"x" * (33 * 2**20)))

        assert await asyncio.to_thread(publish_huge) == 1
        await wait_reconnected(runner)
        assert runner.stats.output_buffer_closes == 1
        await publish_all(runner, "big", [b"after"])
        await eventually(lambda: sizes == [5, 5], what="a message after the reconnect")
        assert runner.metrics is not None
        samples = await asyncio.to_thread(scrape, runner.metrics.url)
        assert samples[("eventbus_output_buffer_closes_total", ())] == 1
    [cause] = [r.getMessage() for r in caplog.records if "client-output-buffer-limit" in r.getMessage()]
    assert "closed the subscription connection" in cause and "32 MB" in cause
    assert "store a large body in a key and publish its id" in cause
    assert "it includes what Redis dropped with the connection" in caplog.text  # the gap report
    assert "output_buffer_closes=1" in caplog.text  # the summary line at shutdown


async def test_a_backlog_past_the_output_buffer_limit_cuts_a_message_short(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A backlog: while the loop is held (CPU-bound code on it), two 20 MiB messages pass 32 MB.

    Redis has written part of the first into the socket when the second makes it drop the
    connection: the reader is cut off in the middle of a message.
    """
    caplog.set_level(logging.INFO, "eventbus")
    sizes: list[int] = []

    @on("big")
    async def big(msg: Message, ctx: Context) -> None:
        sizes.append(len(msg.data))

    # No PING in flight: Redis would answer the close with a reset, which may discard what it wrote.
    async with running([big], own_redis_server.url, ping_interval=60.0) as runner:
        with own_redis_server.client() as client:  # blocking calls: the loop does not read meanwhile
            assert [client.publish("big", b"x" * (20 * 2**20)) for _ in range(2)] == [1, 1]
        await wait_reconnected(runner)
        assert runner.stats.output_buffer_closes == 1
        await publish_all(runner, "big", [b"after"])
        await eventually(lambda: sizes == [5], what="a message after the reconnect")
    assert "while a message was arriving" in caplog.text
    assert "most likely its client-output-buffer-limit" in caplog.text
