"""HandlerWorker: a handler's failures, retries and shutdown, as the counters report them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventbus import Context, Message, on
from eventbus.deadletter import DeadLetterStore
from eventbus.testing import TestBus


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
