"""Batch handlers: the collector, an ordering part of the worker loop, and how a batch is run.

    @on("purchase_orders", batch=Batch(max_size=500, max_wait=0.05))
    async def sales(order_ids: list[str], ctx: Context) -> None: ...

**Collecting** (:class:`BatchCollector`, an :class:`~eventbus._parts.Ordering`). The worker tasks
take messages off the inbox as usual and hand each to :meth:`BatchCollector.admit`, which adds it
to the open batch. A batch closes when it holds ``max_size`` messages, or once ``max_wait``
seconds have passed since its first message was admitted, never earlier: a parked task asks
:meth:`~BatchCollector.flush` again after :meth:`~BatchCollector.deadline`. The closed batch
travels through the loop as one :class:`BatchMessage`, so middleware sees the batch.

Order: without ``key=`` there is one lane, and batches start in the order their messages arrived;
with ``concurrency > 1`` several run at once. With ``key=`` there are ``concurrency`` lanes, each
key always in the same one (by its hash), and a lane runs one batch at a time: the messages of a
key are handled in their order, across batches, while different lanes run in parallel.

Messages held in a batch keep counting against the inbox's memory budget (and so its overflow
policy) until their batch is handed to the handler.

**Running** (:func:`run_batch`). A typed batch handler (``list[Order]``) gets each message decoded;
one that does not decode is dead-lettered alone, without retry, and the batch goes on without it.
A batch whose handler raises is retried whole (``retries``, ``backoff``); after the last attempt
each of its messages is dead-lettered on its own, with the error. A handler that raises
:class:`~eventbus.BatchFailed` names the messages that failed: the others count as handled, and
only those are retried and then dead-lettered (a :class:`~eventbus.Reject` among them at once).
Each message's outcome goes to the settlement part, so a stream entry is acknowledged once its
message is handled or dead-lettered, and a failed one stays pending.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Protocol

from eventbus._errors import BatchFailed, PayloadError, Reject
from eventbus._logs import LineLimit
from eventbus._message import Message
from eventbus._parts import HANDLED, REDELIVERED, Ordering, Settlement, Undeliverable
from eventbus._stats import HandlerStats

if TYPE_CHECKING:
    from eventbus._batch_options import Batch
    from eventbus._router import Handler

log = logging.getLogger("eventbus.worker")

clock = time.monotonic


class Worker(Protocol):
    """What running a batch uses of the worker (eventbus._worker.HandlerWorker, which imports this
    module): its counters, parts and the one failure path."""

    name: str
    handler: Handler
    ctx: Any
    stats: HandlerStats
    settlement: Settlement | None
    lines: LineLimit
    queued_bytes: int
    _invoke: Callable[[Message, Any], Awaitable[Any]]

    async def _failed(self, msg: Message, exc: Exception) -> None: ...

    async def _dead_letter(self, msg: Message, error: str, attempts: int) -> int: ...


class BatchMessage(Message):
    """A closed batch as it travels through the worker loop and its middleware.

    ``messages`` are the batch's messages, in arrival order; ``payloads`` what the handler is
    called with (the messages, or for a typed handler each one decoded). ``channel`` and
    ``pattern`` are the first message's; ``data`` is empty.
    """

    __slots__ = ("lane", "messages", "payloads", "size")

    def __init__(self, messages: list[Message], lane: int = 0) -> None:
        first = messages[0]
        super().__init__(first.channel, b"", first.pattern)
        self.messages = messages
        self.payloads: list[Any] = messages
        self.lane = lane
        self.size = len(messages)  # as collected: retries narrow ``messages`` to the failed ones

    def __len__(self) -> int:
        return len(self.messages)

    def __repr__(self) -> str:
        return f"<BatchMessage {len(self.messages)} message(s) from {self.channel!r}>"


class _Lane:
    __slots__ = ("busy", "open", "opened", "ready")

    def __init__(self) -> None:
        self.open: list[Message] = []
        self.opened = 0.0  # when the open batch's first message was admitted
        self.ready: deque[list[Message]] = deque()  # closed, waiting for the lane (keyed only)
        self.busy = False  # a batch of this lane is being handled (keyed only)


class BatchCollector(Ordering):
    """Collects a batch handler's messages into batches (see the module docstring)."""

    def __init__(self, handler: Handler, batch: Batch, key_of: Callable[[Message], Hashable] | None = None) -> None:
        super().__init__()
        self.max_size = batch.max_size
        self.max_wait = batch.max_wait
        self.key_of = key_of
        # Keyed: one lane per worker task, each run one batch at a time; else one lane, any number
        # of its batches at once.
        self.exclusive = key_of is not None
        self.lanes = [_Lane() for _ in range(handler.options.concurrency if key_of is not None else 1)]

    def _lane_of(self, msg: Message) -> int:
        if self.key_of is None:
            return 0
        try:
            key = self.key_of(msg)
            return hash(key) % len(self.lanes)
        except PayloadError:
            raise  # undecodable: refused, as for any typed handler
        except Exception as exc:
            error = PayloadError(f"cannot compute the key of a message on {msg.channel!r}: {type(exc).__name__}")
            raise error from exc

    def admit(self, msg: Message) -> Message | None:
        index = self._lane_of(msg)
        lane = self.lanes[index]
        if not lane.open:
            lane.opened = clock()
        lane.open.append(msg)
        self.waiting += 1
        if len(lane.open) >= self.max_size:
            lane.ready.append(lane.open)
            lane.open = []
            return self._next(index)
        return self._expired()

    def _expired(self) -> Message | None:
        """A batch whose window has passed (closed now), or a closed one whose lane is free."""
        now = clock()
        for index, lane in enumerate(self.lanes):
            if lane.open and now - lane.opened >= self.max_wait:
                lane.ready.append(lane.open)
                lane.open = []
            if lane.ready and not lane.busy:
                return self._next(index)
        return None

    def _next(self, index: int) -> Message | None:
        lane = self.lanes[index]
        if not lane.ready or lane.busy:
            return None
        messages = lane.ready.popleft()
        lane.busy = self.exclusive
        # In flight, a batch counts as one message in the worker's figures (one task handles it):
        # the others stay counted here until it is settled, so the backlog and idleness stay true.
        self.waiting -= 1
        return BatchMessage(messages, index)

    def flush(self) -> Message | None:
        return self._expired()

    def deadline(self) -> float | None:
        opened = [lane.opened for lane in self.lanes if lane.open]
        if not opened:
            return None
        return max(0.0, min(opened) + self.max_wait - clock())

    def after(self, msg: Message) -> Message | None:
        if not isinstance(msg, BatchMessage):
            return None  # a message refused on its own (its key could not be computed)
        self.waiting -= msg.size - 1
        lane = self.lanes[msg.lane]
        lane.busy = False
        return self._next(msg.lane)

    def abandon(self) -> int:
        for lane in self.lanes:
            lane.open = []
            lane.ready.clear()
            lane.busy = False
        return super().abandon()


def batch_invoke(handler: Handler) -> Callable[[Any, Any], Any]:
    """The worker's ``invoke(batch, ctx)`` for a batch handler: the handler called with the list."""
    func = handler.func
    envelope = handler.payload is not None and handler.payload.envelope
    if handler.is_async:
        if envelope:
            return lambda batch, ctx: func(batch.payloads, ctx, batch.messages)
        return lambda batch, ctx: func(batch.payloads, ctx)
    if envelope:
        return lambda batch, ctx: asyncio.to_thread(func, batch.payloads, ctx, batch.messages)
    return lambda batch, ctx: asyncio.to_thread(func, batch.payloads, ctx)


async def run_batch(worker: Worker, batch: BatchMessage, overhead: int) -> None:
    """Handle one closed batch: decode, call, retry, dead-letter, count and settle each message."""
    stats = worker.stats
    settlement = worker.settlement
    # The loop released the batch's own size from the budget; its messages are released here.
    worker.queued_bytes -= sum(len(m.data) for m in batch.messages) + overhead * (len(batch.messages) - 1)
    pending: list[Message] = []
    payloads: list[Any] = []
    plan = worker.handler.payload
    decode = plan.decoder.cached if plan is not None else None
    for msg in batch.messages:
        refusal = settlement.refusal(msg) if settlement is not None else None
        if refusal is not None:
            await worker._failed(msg, Undeliverable(refusal))
            continue
        if decode is not None:
            try:
                payloads.append(decode(msg))
            except PayloadError as exc:
                await worker._failed(msg, exc)  # refused alone: dead-lettered, never retried
                continue
        pending.append(msg)
    if decode is None:
        payloads = pending
    attempt = 1
    retries = worker.handler.options.retries
    while pending:
        batch.messages, batch.payloads = pending, payloads
        started = clock()
        try:
            await worker._invoke(batch, worker.ctx)
            failure: Exception | None = None
        except Exception as exc:  # noqa: BLE001 - a handler's failure must never stop the loop
            failure = exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            failure = RuntimeError("the handler raised CancelledError (it awaited something that was cancelled)")
        took = clock() - started
        errors = _errors_of(failure, len(pending)) if failure is not None else {}
        handled = [m for i, m in enumerate(pending) if i not in errors]
        if handled:
            stats.observe_batch(took, len(handled))
            if settlement is not None:
                for msg in handled:
                    settling = settlement.settle(msg, HANDLED, None)
                    if settling is not None:
                        await settling
        if not errors:
            return
        retry: list[tuple[Message, Any, Exception]] = []
        for i, error in sorted(errors.items()):
            if isinstance(error, (Reject, PayloadError)):
                await worker._failed(pending[i], error)
            else:
                retry.append((pending[i], payloads[i], error))
        if not retry:
            return
        if attempt > retries:
            await _give_up(worker, retry, attempt)
            return
        stats.retried += len(retry)
        delay = worker.handler.options.backoff * (2 ** (attempt - 1)) * random.uniform(0.5, 1.5)
        first = retry[0][2]
        if worker.lines.allow("retrying"):
            log.warning(
                "handler %s failed on %d message(s) of a batch from %r (attempt %d of %d), retrying them in "
                "%.2fs: %s: %s",
                worker.name,
                len(retry),
                batch.channel,
                attempt,
                retries + 1,
                delay,
                type(first).__name__,
                first,
            )
        await asyncio.sleep(delay)
        attempt += 1
        pending = [m for m, _, _ in retry]
        payloads = [p for _, p, _ in retry]


def _errors_of(failure: Exception, size: int) -> dict[int, Exception]:
    """Which messages of a batch of ``size`` failed, by position, with their error."""
    if not isinstance(failure, BatchFailed):
        return dict.fromkeys(range(size), failure)
    outside = [i for i in failure.errors if i >= size]
    if outside:
        # The handler named messages its batch does not have: it cannot be trusted about the others.
        error = IndexError(f"BatchFailed names position(s) {outside[:5]} of a batch of {size} message(s)")
        return dict.fromkeys(range(size), error)
    return {i: e if isinstance(e, Exception) else RuntimeError(repr(e)) for i, e in failure.errors.items()}


async def _give_up(worker: Worker, failed: list[tuple[Message, Any, Exception]], attempts: int) -> None:
    """After the last attempt: each message dead-lettered on its own with its error, then settled."""
    stats = worker.stats
    settlement = worker.settlement
    first = failed[0][2]
    if worker.lines.allow("failed", logging.ERROR):
        log.error(
            "handler %s failed on %d message(s) of a batch from %r after %d attempt(s): %s: %s",
            worker.name,
            len(failed),
            failed[0][0].channel,
            attempts,
            type(first).__name__,
            first,
            exc_info=first,
        )
    for msg, _, exc in failed:
        if settlement is not None and settlement.redelivers(msg):
            outcome = REDELIVERED
        else:
            outcome = await worker._dead_letter(msg, f"{type(exc).__name__}: {exc}", attempts)
        stats.failed += 1
        if settlement is not None:
            settling = settlement.settle(msg, outcome, exc)
            if settling is not None:
                await settling
