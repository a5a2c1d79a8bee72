"""HandlerWorker: a handler's failures, retries and shutdown, as the counters report them."""

from __future__ import annotations

import asyncio
import sys
from bisect import bisect_left
from collections.abc import Callable
from typing import Any

import pytest

from eventbus import Context, Message, on
from eventbus._deadletter import DeadLetterStore
from eventbus._stats import LATENCY_BUCKETS, HandlerStats
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


# -- the latency histogram: the hot loop reads the clock once per run of messages (HandlerWorker._timed)


def _above(buckets: list[int], seconds: float) -> int:
    """Messages counted in the buckets whose upper bound is above ``seconds``."""
    return sum(buckets[bisect_left(LATENCY_BUCKETS, seconds) :])


async def _drained(handler: Callable[..., Any], channel: str, count: int) -> HandlerStats:
    """Publish ``count`` messages (each its index) to ``handler`` on TestBus; its counters once drained."""
    async with TestBus([handler]) as bus:
        for i in range(count):
            await bus.publish(channel, str(i))
        await bus.drain(timeout=5.0)
        return bus.handler_stats(handler.__name__)


async def test_fast_messages_are_all_counted_in_the_fastest_bucket() -> None:
    @on("latency:fast")
    async def fast(msg: Message, ctx: Context) -> None:
        pass

    stats = await _drained(fast, "latency:fast", 1000)
    assert stats.handled == 1000
    assert stats.latency_buckets[0] == 1000, stats.latency_buckets
    assert 0 < stats.latency_total < 1000 * LATENCY_BUCKETS[0]


async def test_a_slow_message_among_fast_ones_is_counted_as_slow() -> None:
    # Runs of fast messages share a clock reading; a run with an outlier in it must not hide the
    # outlier in the run's average.
    @on("latency:mixed")
    async def mixed(msg: Message, ctx: Context) -> None:
        if int(msg.text) % 50 == 49:
            await asyncio.sleep(0.003)

    stats = await _drained(mixed, "latency:mixed", 500)
    assert stats.handled == 500
    assert _above(stats.latency_buckets, 0.003) == 10, stats.latency_buckets
    assert stats.latency_buckets[0] == 490
    assert stats.latency_total >= 10 * 0.003


async def test_a_handler_slower_than_the_fastest_bucket_is_timed_per_message() -> None:
    @on("latency:slow")
    async def slow(msg: Message, ctx: Context) -> None:
        await asyncio.sleep(0.03 if int(msg.text) % 2 else 0.0012)

    stats = await _drained(slow, "latency:slow", 20)
    buckets = stats.latency_buckets
    assert stats.handled == 20
    assert buckets[0] == 0, buckets
    assert _above(buckets, 0.025) == 10, buckets  # the 30 ms ones, each on its own
    assert _above(buckets, 0.001) - _above(buckets, 0.025) == 10, buckets  # the 1.2 ms ones


async def test_messages_handled_before_a_failure_are_counted() -> None:
    @on("latency:failing")
    async def failing(msg: Message, ctx: Context) -> None:
        if msg.text == "99":
            raise ValueError("boom")

    stats = await _drained(failing, "latency:failing", 200)
    assert (stats.handled, stats.failed) == (199, 1)


async def test_a_failure_being_handled_does_not_leak_into_other_tasks() -> None:
    # The worker suspends while it handles a failure (here: the backoff before the retry). Compiled,
    # an await inside an `except` block left the handler's exception as the thread's current one
    # meanwhile, so other tasks saw it in sys.exc_info() (and logging.exception printed it).
    @on("leak:fail", retries=1, backoff=0.3)
    async def failing(msg: Message, ctx: Context) -> None:
        raise ValueError("boom")

    async with TestBus([failing], grace=0.1) as bus:
        await bus.publish("leak:fail", "1")
        for _ in range(100):
            if bus.handler_stats("failing").retried:
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)  # the worker is in its backoff sleep
        assert sys.exc_info() == (None, None, None)


async def test_idle_workers_stop_without_being_cancelled(recwarn: pytest.WarningsRecorder) -> None:
    """Parked workers are woken to return, not cancelled: a cancellation passing through the compiled
    worker reaches what it awaits through throw()'s three-argument form, which Python 3.12+ warns
    about once per worker task (thousands in a test suite, in users' too)."""
    handlers = []
    for i in range(20):

        async def handle(msg: Message, ctx: Context) -> None: ...

        handlers.append(on("idle", name=f"idle{i}", concurrency=2)(handle))

    @on("keyed", key=lambda payload: payload)
    async def keyed(value: int, ctx: Context) -> None: ...

    async with TestBus([*handlers, keyed]) as bus:
        await bus.publish("idle", "1")
        await bus.publish("keyed", 1)
        await bus.drain()
        tasks = [task for worker in bus.runner.workers for task in worker._tasks]
    assert tasks and all(task.done() and not task.cancelled() for task in tasks)
    assert not [w for w in recwarn if "signature of throw() is deprecated" in str(w.message)]
