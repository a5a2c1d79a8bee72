"""Regression tests for correctness bugs found in review: shutdown cleanup, CLI errors, counters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventbus import Context, Message, Runner, on, on_shutdown
from eventbus.cli import main
from eventbus.deadletter import DeadLetterStore
from eventbus.testing import TestBus
from tests.redis_server import RedisServer


async def test_failing_shutdown_hook_still_closes_the_backend(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A shutdown hook that raises must not skip closing the connections (nor an embedded Redis,
    # which _close_backend stops too), nor the other shutdown hooks.
    ran: list[str] = []

    @on("review:x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    @on_shutdown
    async def broken(ctx: Context) -> None:
        raise RuntimeError("hook failed")

    @on_shutdown
    async def second(ctx: Context) -> None:
        ran.append("second")

    runner = Runner([handler, broken, second], url=redis_server.url, grace=1.0)
    await runner.start()
    client = runner.redis
    await runner.stop()
    assert runner.redis is None, "the command client was left open"
    assert client is not None
    assert ran == ["second"]
    assert "hook failed" in caplog.text


def test_cli_workers_below_one_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "tests.sample_apps.orders", "--workers", "0", "--url", "redis://127.0.0.1:1/0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "--workers" in err


async def test_failure_cut_short_by_the_grace_period_is_counted_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # A handler failed and its dead letter is being written when the grace period runs out: the
    # message is abandoned, and must not also be counted as failed (received would be 2 for 1).
    async def slow_add(self: DeadLetterStore, *args: Any, **kwargs: Any) -> bool:
        await asyncio.sleep(30)
        return True

    monkeypatch.setattr(DeadLetterStore, "add", slow_add)

    @on("review:fail")
    async def failing(msg: Message, ctx: Context) -> None:
        raise ValueError("boom")

    async with TestBus([failing], grace=0.2) as bus:
        await bus.publish("review:fail", "1")
        for _ in range(200):
            if bus.runner.workers[0].in_flight:
                break
            await asyncio.sleep(0.005)
    stats = bus.handler_stats("failing")
    assert stats.received == 1, stats
    assert stats.failed + stats.abandoned == 1, stats


async def test_a_failed_start_leaves_no_subscription_nor_worker_running(redis_server: RedisServer) -> None:
    # The pub/sub subscription is up when a stream consumer fails to start (its key is not a
    # stream): start() must undo it, not leave a connection and a reconnecting supervisor behind.
    from eventbus import on_stream

    @on("review:chan")
    async def plain(msg: Message, ctx: Context) -> None: ...

    @on_stream("review:not-a-stream", group="g")
    async def consumer(msg: Message, ctx: Context) -> None: ...

    with redis_server.client() as client:
        client.set("review:not-a-stream", "a string")
        runner = Runner([plain, consumer], url=redis_server.url, grace=1.0)
        with pytest.raises(Exception, match="WRONGTYPE"):
            await runner.start()
        await asyncio.sleep(0.1)
        leftover = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("eventbus:")]
        assert leftover == []
        assert client.pubsub_numsub("review:chan") == [(b"review:chan", 0)]


async def test_a_handler_raising_cancelled_error_does_not_kill_its_worker() -> None:
    # A handler awaiting something that was cancelled (a shared future, a task) sees
    # CancelledError though its own worker was not cancelled: that is the handler's failure,
    # and the worker must go on with the next message.
    seen: list[str] = []

    @on("review:cancel")
    async def fragile(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)
        if msg.text == "1":
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            future.cancel()
            await future

    async with TestBus([fragile], grace=0.5) as bus:
        await bus.publish("review:cancel", "1")
        await bus.publish("review:cancel", "2")
        await bus.drain(timeout=2.0)
        stats = bus.handler_stats("fragile")
        assert seen == ["1", "2"]
        assert (stats.failed, stats.handled) == (1, 1)
