"""A handler's inbox and the long-lived tasks that drain it: the one worker loop.

The reader calls :meth:`HandlerWorker.put` synchronously for every message routed to the handler:
it must never block, so the inbox is a deque bounded by a memory budget (and optionally a message
count) with an explicit overflow policy. Each worker task runs :meth:`HandlerWorker._work`: pop a
message, await the handler, and on failure take :meth:`HandlerWorker._failed`, the one failure
path (retries with backoff, Reject and PayloadError, dead letters, counters, rate-limited lines).
A slow handler only fills its own inbox.

Every kind of handler runs this loop; what differs is in two optional parts (eventbus._parts): an
ordering (per key, eventbus._keyed) and a settlement (stream acknowledgements, eventbus._streams).
A request (a message with a reply address, eventbus._envelope) is settled by the handler's reply
part instead (eventbus._replies), which publishes the reply and then settles as the handler's own
part does: picked by the message's type, so plain messages keep their cost.

The budget counts each message as its payload plus :data:`MESSAGE_OVERHEAD`, what CPython spends
on a queued message besides the payload (the Message object, the bytes header, the deque slot),
rounded up so that the budget errs towards holding less than it says (benchmarks/PROFILE.md has
the measurement).
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Final

from mypy_extensions import mypyc_attr

from eventbus._batch import BatchMessage, batch_invoke, run_batch
from eventbus._context import Context
from eventbus._deadletter import DeadLetterStore
from eventbus._envelope import Request
from eventbus._errors import PayloadError, Reject
from eventbus._flow import ReadGate
from eventbus._logs import LineLimit
from eventbus._message import Message
from eventbus._parts import DEAD_LETTERED, HANDLED, LOST, REDELIVERED, Ordering, Settlement, Undeliverable
from eventbus._payloads import build_invoke
from eventbus._router import Handler
from eventbus._stats import LATENCY_BUCKETS, HandlerStats
from eventbus.middleware import compose

log = logging.getLogger("eventbus.worker")

# A worker that has run this long (seconds) without the loop getting a turn yields, so the reader
# and the other handlers keep going even when a handler never awaits I/O. Time, not a message
# count, so that fast handlers drain big bursts in long runs and slow ones still yield often.
# (Final: the compiled worker inlines these constants instead of looking them up per message.)
FAIRNESS_SLICE: Final = 0.002
MAX_PENDING_REFUSALS: Final = 1000
MESSAGE_OVERHEAD: Final = 100  # bytes a queued message costs besides its payload (see the module docstring)
MIB: Final = 1024 * 1024
# The hot loop reads the clock once per run of up to this many messages (HandlerWorker._timed).
MAX_RUN: Final = 64
FASTEST_BUCKET: Final = LATENCY_BUCKETS[0]
# The clock the loop times handlers with; a module global (not Final) so that tests can substitute
# one they control: latency buckets are not something a loaded machine can be trusted to reproduce.
clock = time.perf_counter


def _handler_cancelled(cancelled: asyncio.CancelledError) -> Exception:
    """The handler's failure for a CancelledError it raised, unless the worker itself is being cancelled.

    A handler that awaits something cancelled elsewhere (a shared future, another task) gets a
    CancelledError of its own; letting it through would end the worker task for good.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise cancelled  # shutdown: the worker is being stopped
    error = RuntimeError("the handler raised CancelledError (it awaited something that was cancelled)")
    error.__cause__ = cancelled
    return error


def _unchain(exc: BaseException, earlier: tuple[BaseException, ...]) -> None:
    """Drop the link from a retry's exception back to an earlier attempt's.

    The retries run while the first failure is being handled, so Python chains it (or the
    previous attempt's) as ``__context__`` and the final log line would print every attempt's
    traceback again. Each attempt is logged when it happens; the last one's traceback is enough.
    """
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        if any(link.__context__ is e for e in earlier):
            link.__context__ = None
            return
        link = link.__cause__ or link.__context__


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# Compiled with mypyc where a compiler is available (setup.py).
@mypyc_attr(allow_interpreted_subclasses=True)
class HandlerWorker:
    """The inbox and worker tasks of one handler."""

    def __init__(
        self,
        handler: Handler,
        ctx: Context,
        stats: HandlerStats,
        dead_letters: DeadLetterStore,
        gate: ReadGate | None = None,
        ordering: Ordering | None = None,
        settlement: Settlement | None = None,
        replies: Settlement | None = None,
    ):
        self.handler = handler
        self.name = handler.name
        self.ctx = ctx
        self.stats = stats
        self.dead_letters = dead_letters
        self.inbox: deque[Message] = deque()
        self._append = self.inbox.append  # looked up once: put runs once per message
        options = handler.options
        self.budget = options.inbox_bytes
        # No count cap by default: a number keeps the hot path's check to one comparison.
        self.max_messages = options.inbox_size if options.inbox_size is not None else sys.maxsize
        self._capped = options.inbox_size is not None  # compiled, sys.maxsize is not a small int
        self.queued_bytes = 0  # what the inbox holds, as counted against the budget
        self.overflow = options.overflow
        self.gate = gate if gate is not None else ReadGate()
        self._holding_gate = False
        self._low_water = self.budget // 2
        self._parked = 0  # worker tasks waiting for a message
        self._yielding = 0  # worker tasks giving the loop a turn between messages
        stats.backlog = self._backlog
        self._sleepers: deque[asyncio.Future[None]] = deque()
        self._stopping = False  # set by stop(): parked worker tasks return instead of waiting
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[int]] = set()  # dead letters of refused messages
        # Called each time the worker becomes idle (a task parks with nothing queued or running):
        # what Runner.drain waits on.
        self.on_idle: Callable[[], None] | None = None
        # Told of each arriving message the overflow policy dropped (not of evicted ones): the
        # recovery reads a recoverable channel's dropped messages back from its history.
        self.on_drop: Callable[[HandlerWorker, Message], None] | None = None
        # Every line a single message can cause goes through here: rate-limited per reason.
        self.lines = LineLimit(log, f"handler {self.name}")
        self._retries = options.retries
        self._backoff = options.backoff
        # The loop's parts (eventbus._parts; the runner picks them for the handler). None is the plain
        # case: one FIFO inbox, nothing to settle.
        self.ordering = ordering
        self.settlement = settlement
        # The settlement of requests (eventbus._replies.ReplySender around `settlement`); without
        # one, requests are settled as any message (nobody replies).
        self.replies = replies if replies is not None else settlement
        # Called as invoke(msg, ctx); async handlers directly, plain ones through a thread, inside
        # the handler's middleware chain (composed once here; no wrapper when there is none).
        # Typed handlers get their payload decoded first (eventbus._payloads; built at load time).
        # A batch handler is called with its batch's list (eventbus._batch).
        self._batching = options.batch is not None
        call: Callable[[Message, Context], Awaitable[Any]] = (
            batch_invoke(handler)
            if self._batching
            else build_invoke(handler.payload, handler.func, handler.is_async, options.key is not None)
            if handler.payload is not None
            else handler.func
            if handler.is_async
            else self._run_in_thread
        )
        self._invoke: Callable[[Message, Context], Awaitable[Any]] = compose(call, handler.middleware, handler)

    # -- the reader's side -------------------------------------------------------------------

    def put(self, msg: Message) -> None:
        size = len(msg.data) + MESSAGE_OVERHEAD
        queued = self.queued_bytes + size
        if queued > self.budget or (self._capped and len(self.inbox) >= self.max_messages):
            self._overflowing(msg, size)
            return
        self.queued_bytes = queued
        self._append(msg)
        if self._sleepers:
            self._wake_one()

    def enqueue(self, msg: Message) -> None:
        """Queue ``msg`` whatever the budget says: for sources with backpressure of their own
        (stream consumers read only when there is room), where a drop would strand the entry; and
        for the "pause" overflow policy, which stops reading instead of dropping."""
        self.queued_bytes += len(msg.data) + MESSAGE_OVERHEAD
        self.inbox.append(msg)
        if self._sleepers:
            self._wake_one()

    def _wake_one(self) -> None:
        # A task parked with a deadline (a batch's window) may have woken by itself and left its
        # waiter here, done: wake the next one instead, so that the message is not left unseen.
        sleepers = self._sleepers
        while sleepers:
            waiter = sleepers.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _overflowing(self, msg: Message, size: int) -> None:
        """The inbox is over its budget (or count cap): apply the handler's overflow policy."""
        if self.overflow == "pause":
            # The message is already read: keep it (the budget is exceeded by at most what one
            # socket read carried) and stop reading until the inbox has drained to half.
            self.enqueue(msg)
            if not self._holding_gate:
                self._holding_gate = True
                self.gate.hold(self.name)
            return
        if self.overflow == "drop_oldest" and size <= self.budget:
            inbox = self.inbox
            while inbox and (self.queued_bytes + size > self.budget or len(inbox) >= self.max_messages):
                evicted = inbox.popleft()
                self.queued_bytes -= len(evicted.data) + MESSAGE_OVERHEAD
                self._dropped()
            self.enqueue(msg)
            return
        self._dropped()  # drop_newest, or a message bigger than the whole budget
        if self.on_drop is not None:
            self.on_drop(self, msg)

    def _release_if_drained(self) -> None:
        if self._holding_gate and self.queued_bytes <= self._low_water:
            self._holding_gate = False
            self.gate.release(self.name)

    def refuse(self, msg: Message, reason: str) -> None:
        """Count and dead-letter a message the reader would not deliver: over the size cap."""
        self.stats.rejected += 1
        # A flood of oversized messages must not become a flood of tasks: past this many
        # unfinished dead-letter writes, refusals are counted and logged but not stored.
        stored = len(self._background) < MAX_PENDING_REFUSALS
        if self.lines.allow("refused"):
            log.warning(
                "handler %s refused a message on %r: %s (raise the cap with --max-payload, or "
                "Runner(max_payload=...)); %s",
                self.name,
                msg.channel,
                reason,
                "dead-lettering its first 1 KiB" if stored else "not dead-lettered (too many writes pending)",
            )
        if not stored:
            self.stats.dead_letter_failed += 1
            return
        # Keep only a prefix: the point is to show what arrived, not to store a flood.
        kept = Message(msg.channel, msg.data[:1024], msg.pattern)
        task = asyncio.get_running_loop().create_task(self._dead_letter(kept, reason, 0))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _dropped(self) -> None:
        self.stats.dropped += 1
        if self.lines.allow("dropped"):
            log.warning(
                "inbox of handler %s is full (%d messages, %.1f of %.1f MiB%s): dropped a message "
                "(policy %s, %d dropped in total)",
                self.name,
                len(self.inbox),
                self.queued_bytes / MIB,
                self.budget / MIB,
                "" if self.max_messages == sys.maxsize else f", cap {self.max_messages} messages",
                self.overflow,
                self.stats.dropped,
            )

    # -- the workers' side -------------------------------------------------------------------

    def start(self) -> None:
        for i in range(self.handler.options.concurrency):
            task = asyncio.create_task(self._work(), name=f"eventbus:{self.name}:{i}")
            task.add_done_callback(self._task_ended)
            self._tasks.append(task)

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        # The loop catches every handler failure, so this is a bug in the worker or one of its parts:
        # say so at once, since the handler now has a task fewer (none, at concurrency 1).
        if not task.cancelled() and task.exception() is not None:
            log.error("handler %s: worker task %s died", self.name, task.get_name(), exc_info=task.exception())

    @property
    def in_flight(self) -> int:
        """Messages being handled now (retries included): workers neither parked nor yielding.

        Derived from two counters that change once per park or yield, not once per message.
        """
        return len(self._tasks) - self._parked - self._yielding

    def _backlog(self) -> int:
        return len(self.inbox) + self.in_flight + (self.ordering.waiting if self.ordering is not None else 0)

    @property
    def idle(self) -> bool:
        return not self.inbox and self.in_flight == 0 and (self.ordering is None or not self.ordering.waiting)

    async def _wait_for_work(self, timeout: float | None) -> None:
        """Park until a message arrives, ``timeout`` passes, or stop(): the caller checks
        ``_stopping`` after it."""
        if self._stopping:
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._sleepers.append(waiter)
        self._parked += 1
        if self.on_idle is not None and self.idle:
            self.on_idle()
        timer = None if timeout is None else loop.call_later(timeout, _wake, waiter)
        try:
            await waiter
        finally:
            self._parked -= 1
            if timer is not None:
                timer.cancel()

    async def _yield(self) -> None:
        # A handler that never suspends would otherwise starve the reader and the other
        # handlers: give the loop a turn every few milliseconds of work.
        self._yielding += 1
        try:
            await asyncio.sleep(0)
        finally:
            self._yielding -= 1

    async def _work(self) -> None:
        """One worker task: the loop every handler runs, whatever its parts.

        The success path is written out here rather than in helpers (each would cost a coroutine
        frame per message); a failure leaves it for :meth:`_failed`.
        """
        inbox = self.inbox
        popleft = inbox.popleft
        overhead = MESSAGE_OVERHEAD
        call = self._invoke
        ctx = self.ctx
        now_ = clock
        ordering = self.ordering
        settlement = self.settlement
        replies = self.replies
        request = Request  # a local: compiled, a module global would be a dict lookup per message
        batching = self._batching
        # Set by the ordering part: the message this task must handle before taking another from the
        # inbox (the next of the key it holds, a batch whose time is up).
        following: Message | None = None
        while True:
            if not inbox and self._holding_gate:
                # Resuming may deliver at once (the memory broker does): look again before parking.
                self._release_if_drained()
            if not inbox:
                if ordering is not None:
                    following = ordering.flush()
                if following is None:
                    await self._wait_for_work(ordering.deadline() if ordering is not None else None)
                    if self._stopping:
                        return
            # The clock is read once per run of messages, not once per message: the end of one run
            # is the start of the next while the inbox has work, and a run's length adapts (_timed).
            now = yielded = now_()
            timed = 0  # messages handled since `now` was read
            run = 1  # messages to handle before the next reading
            try:
                while following is not None or inbox:
                    failure: Exception | None = None
                    if following is not None:
                        msg = following
                        following = None
                    else:
                        msg = popleft()
                        if ordering is not None:
                            try:
                                turn = ordering.admit(msg)
                            except PayloadError as exc:
                                failure = exc
                                turn = msg
                            if turn is None:
                                continue  # the part keeps it (behind its key): still in the budget
                            msg = turn
                    self.queued_bytes -= len(msg.data) + overhead
                    if batching and failure is None and isinstance(msg, BatchMessage):
                        # A closed batch: run, retried, counted and settled message by message there.
                        if timed:
                            self._timed(now_() - now, timed, run)
                        timed, run = 0, 1
                        await run_batch(self, msg, overhead)
                        if ordering is not None:
                            following = ordering.after(msg)
                        now = now_()
                        continue
                    part = settlement if type(msg) is not request else replies
                    if part is not None and failure is None:
                        refusal = part.refusal(msg)
                        if refusal is not None:
                            failure = Undeliverable(refusal)
                    result: object = None
                    if failure is None:
                        try:
                            result = await call(msg, ctx)
                        except Exception as exc:  # noqa: BLE001 - a handler's failure must never stop the loop
                            failure = exc
                        except asyncio.CancelledError as cancelled:
                            failure = _handler_cancelled(cancelled)
                    if failure is not None:
                        # Handled after the except clauses, never awaited inside one: compiled, the
                        # worker has no generator frame to hold the exception while it is suspended,
                        # so other tasks would see it as the thread's current one (sys.exc_info()).
                        if timed:
                            self._timed(now_() - now, timed, run)
                        timed, run = 0, 1
                        await self._failed(msg, failure)
                        if ordering is not None:
                            following = ordering.after(msg)
                        now = now_()
                        continue
                    if part is not None:
                        settling = part.settle(msg, HANDLED, result)
                        if settling is not None:
                            await settling
                    if ordering is not None:
                        following = ordering.after(msg)
                    timed += 1
                    # A run also ends with the inbox: every message is counted before the worker parks.
                    if timed < run and (inbox or following is not None):
                        continue
                    end = now_()
                    run = self._timed(end - now, timed, run)
                    timed = 0
                    now = end
                    if end - yielded > FAIRNESS_SLICE:
                        if self._holding_gate:
                            self._release_if_drained()
                        await self._yield()
                        now = yielded = now_()
            finally:
                if timed:  # cancelled (shutdown) in the middle of a run
                    self._timed(now_() - now, timed, run)

    def _timed(self, took: float, messages: int, run: int) -> int:
        """Count ``messages`` handled in ``took`` seconds; returns the next run's length.

        A run that fits in the fastest latency bucket puts each of its messages there exactly (none
        can have taken longer than the whole run), and the next run is twice as long, up to
        :data:`MAX_RUN`: a fast handler reads the clock a few times per socket read instead of once
        per message. A run that does not fit is counted as one message that took the whole run and
        the rest in the fastest bucket (an outlier among fast messages, the usual reason, stays
        visible as one slow message), and the messages after it are timed one by one again, so a
        handler slower than the fastest bucket is timed per message, exactly. The latency sum is
        exact either way.
        """
        stats = self.stats
        stats.latency_total += took
        buckets = stats.latency_buckets
        if took <= FASTEST_BUCKET:
            buckets[0] += messages
            return run + run if run < MAX_RUN else run
        buckets[0] += messages - 1
        buckets[bisect_left(LATENCY_BUCKETS, took)] += 1
        return 1

    async def _attempt(self, msg: Message) -> tuple[Exception | None, object]:
        """Call the handler once more (a retry): (None, its return value), or (its failure, None)."""
        try:
            return None, await self._invoke(msg, self.ctx)
        except Exception as exc:  # noqa: BLE001 - a handler's failure must never stop the loop
            return exc, None
        except asyncio.CancelledError as cancelled:
            return _handler_cancelled(cancelled), None

    async def _failed(self, msg: Message, exc: Exception) -> None:
        """The failure path: retry if allowed, else count, log and dead-letter; then settle.

        Every kind of handler comes here, and the settlement part hears the outcome once: the reply
        part for a request, as in :meth:`_work`.
        """
        stats = self.stats
        settlement = self.settlement if type(msg) is not Request else self.replies
        first = exc
        attempt = 1
        detail: object = exc
        while True:
            if isinstance(exc, Undeliverable):
                outcome = await self._dead_letter(msg, str(exc), 0)
                stats.failed += 1  # after the dead letter, as below
                break
            if isinstance(exc, (Reject, PayloadError)):
                # Retrying cannot fix a refused or undecodable payload: dead-letter it at once.
                reason = exc.reason if isinstance(exc, Reject) else f"invalid payload: {exc}"
                if self.lines.allow("rejected" if isinstance(exc, Reject) else "invalid payload"):
                    log.warning("handler %s rejected a message on %r: %s", self.name, msg.channel, reason)
                outcome = await self._dead_letter(msg, f"rejected: {reason}", attempt)
                # Counted once the dead letter is written: until then the message is in flight, and
                # one cut short by the grace period is counted as abandoned, not as both.
                stats.rejected += 1
                break
            if attempt > self._retries:
                if self.lines.allow("failed", logging.ERROR):
                    log.error(
                        "handler %s failed on %r after %d attempt(s): %s: %s",
                        self.name,
                        msg.channel,
                        attempt,
                        type(exc).__name__,
                        exc,
                        exc_info=exc,
                    )
                if settlement is not None and settlement.redelivers(msg):
                    outcome = REDELIVERED
                else:
                    outcome = await self._dead_letter(msg, f"{type(exc).__name__}: {exc}", attempt)
                stats.failed += 1  # after the dead letter, as for rejected above
                break
            stats.retried += 1
            delay = self._backoff * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
            if self.lines.allow("retrying"):
                log.warning(
                    "handler %s failed on %r (attempt %d of %d), retrying in %.2fs: %s: %s",
                    self.name,
                    msg.channel,
                    attempt,
                    self._retries + 1,
                    delay,
                    type(exc).__name__,
                    exc,
                )
            await asyncio.sleep(delay)
            attempt += 1
            started = clock()
            failure, result = await self._attempt(msg)
            if failure is not None:
                _unchain(failure, (first, exc))
                exc = detail = failure
                continue
            stats.observe(clock() - started)
            if self.lines.allow("retry succeeded", logging.DEBUG):
                log.debug("handler %s succeeded on %r at attempt %d", self.name, msg.channel, attempt)
            outcome, detail = HANDLED, result
            break
        if settlement is not None:
            settling = settlement.settle(msg, outcome, detail)
            if settling is not None:
                await settling

    async def _run_in_thread(self, msg: Message, ctx: Context) -> Any:
        # Plain `def` handlers may block: run them in a worker thread, never on the loop.
        return await asyncio.to_thread(self.handler.func, msg, ctx)

    async def _dead_letter(self, msg: Message, error: str, attempts: int) -> int:
        """Store ``msg`` in the dead letters; returns the outcome, DEAD_LETTERED or LOST."""
        extra = self.settlement.dead_letter_fields(msg) if self.settlement is not None else None
        if not await self.dead_letters.add(self.name, msg, error, attempts, extra):
            self.stats.dead_letter_failed += 1  # lost: the store logged why
            return LOST
        self.stats.dead_lettered += 1
        if self.lines.allow("dead-lettered", logging.DEBUG):
            log.debug("handler %s: message on %r dead-lettered after %d attempt(s)", self.name, msg.channel, attempts)
        return DEAD_LETTERED

    # -- shutdown ----------------------------------------------------------------------------

    async def stop(self) -> int:
        """End the worker tasks; returns how many messages were abandoned (queued + in flight)."""
        abandoned = self._backlog()
        self._stopping = True
        if self.ordering is not None:
            self.ordering.abandon()
        self.inbox.clear()
        self.queued_bytes = 0
        if self._holding_gate:
            self._holding_gate = False
            self.gate.release(self.name)
        # Parked tasks are woken to return by themselves; only those still busy (in flight past
        # the grace period) are cancelled. Cancelling a task suspended in the compiled worker makes
        # mypyc's code pass the cancellation on with throw()'s three-argument form, which Python
        # 3.12+ warns about: one DeprecationWarning per task, in users' test suites too.
        while self._sleepers:
            self._wake_one()
        for _ in range(2):  # a woken task returns within one turn, a yielding one within two
            await asyncio.sleep(0)
        for task in self._tasks:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._background:
            # Dead letters of refused messages still being written: give them a moment before
            # the client closes, then give up on them (they are counted as rejected already).
            _, late = await asyncio.wait(self._background, timeout=1.0)
            for writing in late:
                writing.cancel()
        self.stats.abandoned += abandoned
        if self.replies is not None:  # the reply part stops the handler's own part too
            self.replies.stop()
        self.lines.flush()  # what the rate limit held back is counted in the log before the end
        return abandoned
