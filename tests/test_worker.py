"""HandlerWorker: the one worker loop, its parts, a handler's failures, retries and shutdown, as
the counters report them."""

from __future__ import annotations

import asyncio
import sys
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest

import eventbus._runner
import eventbus._worker
from eventbus import Context, Message, Reject, on, on_stream
from eventbus._deadletter import DeadLetterStore
from eventbus._keyed import KeyedOrdering
from eventbus._parts import OUTCOMES, Ordering, Settlement
from eventbus._stats import LATENCY_BUCKETS, HandlerStats
from eventbus._streams import StreamSettlement
from eventbus._worker import HandlerWorker
from eventbus.testing import TestBus
from tests.buses import wait_until


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
        await wait_until(lambda: bus.runner.workers[0].in_flight > 0)
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


# -- the latency histogram: the loop reads the clock once per run of messages (HandlerWorker._timed)
#
# Timed on a clock the handlers move (FakeClock), not the wall clock: on a loaded machine any
# run of fast messages can be preempted for longer than the fastest bucket, and the message that
# ends it is then (truly) slow; the rules of the histogram are what these tests check.


class FakeClock:
    """Stands in for eventbus._worker.clock: time passes only when a handler says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(eventbus._worker, "clock", fake)
    return fake


def _above(buckets: list[int], seconds: float) -> int:
    """Messages counted in the buckets whose upper bound is above ``seconds``."""
    return sum(buckets[bisect_left(LATENCY_BUCKETS, seconds) :])


async def _drained(handler: Callable[..., Any], channel: str, count: int) -> HandlerStats:
    """Publish ``count`` messages (each its index) to ``handler`` on TestBus; its counters once drained."""
    async with TestBus([handler]) as bus:
        for i in range(count):
            await bus.publish(channel, str(i))
        await bus.drain(timeout=30.0)
        return bus.handler_stats(handler.__name__)


async def test_fast_messages_are_all_counted_in_the_fastest_bucket(fake_clock: FakeClock) -> None:
    @on("latency:fast")
    async def fast(msg: Message, ctx: Context) -> None:
        fake_clock.advance(1e-6)

    stats = await _drained(fast, "latency:fast", 1000)
    assert stats.handled == 1000
    assert stats.latency_buckets[0] == 1000, stats.latency_buckets
    assert stats.latency_total == pytest.approx(1000 * 1e-6)


async def test_a_slow_message_among_fast_ones_is_counted_as_slow(fake_clock: FakeClock) -> None:
    # Runs of fast messages share a clock reading; a run with an outlier in it must not hide the
    # outlier in the run's average.
    @on("latency:mixed")
    async def mixed(msg: Message, ctx: Context) -> None:
        fake_clock.advance(0.003 if int(msg.text) % 50 == 49 else 1e-6)

    stats = await _drained(mixed, "latency:mixed", 500)
    assert stats.handled == 500
    assert _above(stats.latency_buckets, 0.003) == 10, stats.latency_buckets
    assert stats.latency_buckets[0] == 490
    assert stats.latency_total == pytest.approx(10 * 0.003 + 490 * 1e-6)


async def test_a_handler_slower_than_the_fastest_bucket_is_timed_per_message(fake_clock: FakeClock) -> None:
    @on("latency:slow")
    async def slow(msg: Message, ctx: Context) -> None:
        fake_clock.advance(0.03 if int(msg.text) % 2 else 0.0012)

    stats = await _drained(slow, "latency:slow", 20)
    buckets = stats.latency_buckets
    assert stats.handled == 20
    assert buckets[0] == 0, buckets
    assert _above(buckets, 0.025) == 10, buckets  # the 30 ms ones, each on its own
    assert _above(buckets, 0.001) - _above(buckets, 0.025) == 10, buckets  # the 1.2 ms ones


async def test_the_wall_clock_times_real_handlers() -> None:
    # The same histogram on the real clock: only what a loaded machine cannot break is asserted.
    @on("latency:real")
    async def real(msg: Message, ctx: Context) -> None:
        if msg.text == "9":
            await asyncio.sleep(0.003)

    stats = await _drained(real, "latency:real", 10)
    assert stats.handled == 10
    assert _above(stats.latency_buckets, 0.003) >= 1, stats.latency_buckets
    assert stats.latency_total >= 0.003


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
        # Counted just before the worker's backoff sleep, which outlasts this check by far.
        await wait_until(lambda: bus.handler_stats("failing").retried > 0)
        await asyncio.sleep(0)  # the worker has suspended in its backoff: other tasks run now
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


# -- the loop's parts (eventbus._parts): what a new part can count on


class RecordingSettlement(Settlement):
    """Every outcome the loop reports, by message text."""

    def __init__(self) -> None:
        self.outcomes: dict[str, list[tuple[str, object]]] = {}
        self.stopped = False

    def settle(self, msg: Message, outcome: int, detail: object) -> None:
        self.outcomes.setdefault(msg.text, []).append((OUTCOMES[outcome], detail))

    def stop(self) -> None:
        self.stopped = True


async def test_a_settlement_hears_each_outcome_exactly_once(monkeypatch: pytest.MonkeyPatch) -> None:
    part = RecordingSettlement()
    monkeypatch.setattr(eventbus._runner, "settlement_for", lambda handler: part)
    attempts: dict[str, int] = {}

    @on("parts:settle", retries=1, backoff=0.001)
    async def handler(msg: Message, ctx: Context) -> str:
        attempts[msg.text] = attempts.get(msg.text, 0) + 1
        if msg.text.startswith("reject"):
            raise Reject("not for us")
        if msg.text.startswith("fail"):
            raise ValueError("always")
        if msg.text.startswith("flaky") and attempts[msg.text] == 1:
            raise ValueError("once")
        return f"done {msg.text}"

    texts = [f"{kind}{i}" for i in range(5) for kind in ("ok", "flaky", "reject", "fail")]
    async with TestBus([handler]) as bus:
        for text in texts:
            await bus.publish("parts:settle", text)
        await bus.drain(timeout=30.0)
    assert sorted(part.outcomes) == sorted(texts)
    for text, seen in part.outcomes.items():
        assert len(seen) == 1, (text, seen)
        outcome, detail = seen[0]
        if text.startswith(("ok", "flaky")):
            assert (outcome, detail) == ("handled", f"done {text}")
        else:
            assert outcome == "dead-lettered" and isinstance(detail, Exception), (text, seen)
    retried = {f"{kind}{i}": 2 for i in range(5) for kind in ("flaky", "fail")}
    assert {text: n for text, n in attempts.items() if n != 1} == retried
    assert part.stopped


class HoldingOrdering(Ordering):
    """Keeps every message and hands them over only when the inbox is empty and its deadline
    passed: the shape of a batch collector's max_wait."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: deque[Message] = deque()
        self.flushes = 0

    def admit(self, msg: Message) -> Message | None:
        self.kept.append(msg)
        self.waiting += 1
        return None

    def flush(self) -> Message | None:
        if not self.kept:
            return None
        self.flushes += 1
        self.waiting -= 1
        return self.kept.popleft()

    def deadline(self) -> float | None:
        return 0.01 if self.kept else None


async def test_an_ordering_part_can_hold_messages_and_hand_them_over_later(monkeypatch: pytest.MonkeyPatch) -> None:
    part = HoldingOrdering()
    monkeypatch.setattr(eventbus._runner, "ordering_for", lambda handler: part)
    seen: list[str] = []

    @on("parts:hold")
    async def handler(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)

    async with TestBus([handler]) as bus:
        for i in range(20):
            await bus.publish("parts:hold", str(i))
        assert not bus.runner.workers[0].idle  # held messages are backlog, not done
        await bus.drain(timeout=30.0)
        assert bus.handler_stats("handler").received == 20
    assert seen == [str(i) for i in range(20)]
    assert part.flushes == 20


async def test_drain_returns_as_soon_as_the_handlers_are_idle_and_honours_its_timeout() -> None:
    release = asyncio.Event()

    @on("parts:drain")
    async def handler(msg: Message, ctx: Context) -> None:
        await release.wait()

    async with TestBus([handler]) as bus:
        await bus.publish("parts:drain", "1")
        assert not await bus.runner.drain(0.05)  # the handler is still waiting
        waiting = asyncio.create_task(bus.runner.drain(30.0))
        await asyncio.sleep(0)
        assert not waiting.done()
        release.set()
        assert await waiting


async def test_every_kind_of_handler_runs_the_one_loop() -> None:
    # No subclass overrides the loop or the failure path: whatever the handler, its worker is a
    # HandlerWorker itself, so a compiled build runs the compiled loop for all of them.
    @on("kinds:plain")
    async def plain(msg: Message, ctx: Context) -> None: ...

    @on("kinds:typed")
    async def typed(value: dict[str, int], ctx: Context) -> None: ...

    @on("kinds:keyed", key="id")
    async def keyed(value: dict[str, int], ctx: Context) -> None: ...

    @on_stream("kinds:stream")
    async def stream(msg: Message, ctx: Context) -> None: ...

    async with TestBus([plain, typed, keyed, stream]) as bus:
        workers = {w.name: w for w in bus.runner.workers}
    assert {name: type(w) for name, w in workers.items()} == dict.fromkeys(workers, HandlerWorker)
    assert isinstance(workers["keyed"].ordering, KeyedOrdering) and workers["plain"].ordering is None
    assert isinstance(workers["stream"].settlement, StreamSettlement) and workers["typed"].settlement is None


class BrokenSettlement(Settlement):
    def settle(self, msg: Message, outcome: int, detail: object) -> None:
        raise RuntimeError("a bug in a part")


async def test_a_worker_task_that_dies_says_so(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Only a bug can end a worker task (handler failures are caught): it must not go unnoticed.
    monkeypatch.setattr(eventbus._runner, "settlement_for", lambda handler: BrokenSettlement())

    @on("parts:broken")
    async def handler(msg: Message, ctx: Context) -> None: ...

    async with TestBus([handler], grace=0.1) as bus:
        await bus.publish("parts:broken", "1")
        await wait_until(lambda: "worker task" in caplog.text)
    assert "handler handler: worker task eventbus:handler:0 died" in caplog.text
