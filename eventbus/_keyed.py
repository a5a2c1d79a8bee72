"""Ordered per key, parallel across keys: the worker strategy of ``@on(..., key=...)``.

    @on("orders", concurrency=8, key="customer")
    async def store(order: Order, ctx: Context) -> None: ...

Messages with equal keys are handled one at a time, in the order they were delivered; messages
with different keys run in parallel, up to ``concurrency`` at once. Retries happen while the key
is held, so a retried message still goes before the later messages of its key.

How: each of the handler's ``concurrency`` tasks takes the next message from the shared inbox and
computes its key. A key that no task holds is taken, and the task handles the message, then every
message that arrived for that key meanwhile, then lets the key go. A message whose key another task
holds is appended to that key's queue instead, and the task goes on to the next message. So a
task never waits for a key, a busy key never blocks the others, and the order of a key is the
order of the inbox.

It is a separate loop, chosen when the worker starts, so handlers without a key keep the plain
(inlined) loop and pay nothing for this. Messages waiting behind their key still count against
the inbox's memory budget until their turn comes.
"""

from __future__ import annotations

import operator
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from eventbus._errors import ConfigError, PayloadError
from eventbus._message import Message
from eventbus._router import Handler


class KeyedWorker(Protocol):
    """What the scheduler uses of its :class:`~eventbus._worker.HandlerWorker` (which imports this
    module: the engine's import graph goes one way)."""

    handler: Handler
    inbox: deque[Message]
    queued_bytes: int
    _holding_gate: bool
    _stopping: bool

    def _release_if_drained(self) -> None: ...
    async def _wait_for_work(self) -> None: ...
    def _taken(self, msg: Message) -> None: ...
    async def _failed(self, msg: Message, exc: Exception, attempt: int) -> None: ...
    async def _process(self, msg: Message) -> None: ...
    async def _yield(self) -> None: ...


def key_function(worker: KeyedWorker) -> Callable[[Message], Hashable]:
    """``key_of(msg)`` for a handler: its ``key`` option applied to what the handler receives."""
    handler = worker.handler
    key = handler.options.key
    if key is None:
        raise ConfigError(f"handler {handler.name} has no key")
    plan = handler.payload
    if isinstance(key, str):
        mapping = plan is not None and (
            plan.decoder.annotation is dict or _is_typed_dict(plan.decoder.annotation) or plan.decoder.codec == "json"
        )
        pick: Callable[[Any], Hashable] = operator.itemgetter(key) if mapping else operator.attrgetter(key)
    else:
        pick = key
    if plan is None:
        return pick
    # Cached: the invoke decodes the same message again right after (eventbus._payloads).
    decode = plan.decoder.cached
    return lambda msg: pick(decode(msg))


def _is_typed_dict(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, dict) and hasattr(annotation, "__total__")


class KeyedScheduler:
    """The per-key queues of one handler, shared by its worker tasks."""

    def __init__(self, worker: KeyedWorker, *, fairness_slice: float, message_overhead: int) -> None:
        self.worker = worker
        self.fairness_slice = fairness_slice  # the worker's: yield after this long without a pause
        self.message_overhead = message_overhead  # the worker's: what a queued message costs
        self.key_of = key_function(worker)
        # A key is in this dict while a task handles its messages; the deque holds the ones waiting.
        self.held: dict[Hashable, deque[Message]] = {}
        self.waiting = 0  # messages in the deques, for the backlog and the shutdown count

    async def run(self) -> None:
        """One worker task's loop."""
        fairness_slice, overhead = self.fairness_slice, self.message_overhead
        worker = self.worker
        inbox = worker.inbox
        held = self.held
        clock = time.perf_counter
        yielded = clock()
        while True:
            if not inbox:
                worker._release_if_drained()
                await worker._wait_for_work()
                if worker._stopping:
                    return
                yielded = clock()
                continue
            msg = inbox.popleft()
            try:
                key = self.key_of(msg)
                hash(key)
            except PayloadError as exc:
                worker._taken(msg)
                await worker._failed(msg, exc, 1)  # undecodable: refused, as for any typed handler
                continue
            except Exception as exc:  # noqa: BLE001 - a key function's failure is the message's
                worker._taken(msg)
                error = PayloadError(f"cannot compute the key of a message on {msg.channel!r}: {type(exc).__name__}")
                error.__cause__ = exc
                await worker._failed(msg, error, 1)
                continue
            queue = held.get(key)
            if queue is not None:
                # Another task holds the key: it handles this one after the ones before it.
                queue.append(msg)
                self.waiting += 1
                continue
            queue = held[key] = deque()
            try:
                while True:
                    worker.queued_bytes -= len(msg.data) + overhead
                    await worker._process(msg)
                    if worker._holding_gate:
                        worker._release_if_drained()  # overflow="pause": resume reading at half
                    if clock() - yielded > fairness_slice:
                        await worker._yield()
                        yielded = clock()
                    if not queue:
                        break
                    msg = queue.popleft()
                    self.waiting -= 1
            finally:
                del held[key]

    def abandon(self) -> int:
        """Forget the messages waiting behind their keys (shutdown); returns how many there were."""
        waiting = self.waiting
        for queue in self.held.values():
            queue.clear()
        self.waiting = 0
        return waiting
