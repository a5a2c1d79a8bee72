"""The pluggable parts of the worker loop: how messages are ordered, and how a result is settled.

Every handler runs the same loop (:meth:`eventbus._worker.HandlerWorker._work`): take a message,
call the handler, and on failure take the one failure path (retries, backoff, Reject and
PayloadError, dead letters, counters, rate-limited log lines). What differs between kinds of
handler is confined to two parts, each optional (``None`` costs the loop one comparison):

- an :class:`Ordering` decides which message a worker task handles next. None is the one FIFO
  inbox shared by the ``concurrency`` tasks; :class:`eventbus._keyed.KeyedOrdering` keeps the
  order per key while running different keys in parallel.
- a :class:`Settlement` is told what became of each message, exactly once, with an outcome
  (:data:`HANDLED`, :data:`DEAD_LETTERED`, :data:`LOST`, :data:`REDELIVERED`) and its detail (the
  handler's return value, or the final exception). None does nothing (pub/sub);
  :class:`eventbus._streams.StreamSettlement` acknowledges stream entries (XACK) or leaves them
  pending for redelivery.

The next capabilities plug in here, one part each:

- **a batch collector** (``@on(..., batch=Batch(max_size, max_wait))``) is an :class:`Ordering`:
  :meth:`~Ordering.admit` keeps messages and returns ``None`` until the batch is full, then returns
  one message standing for the batch; :meth:`~Ordering.flush` hands over a partial batch once
  ``max_wait`` has passed, and :meth:`~Ordering.deadline` tells the loop how long it may park
  before asking again. The loop subtracts a message's bytes from the inbox budget when it is
  handed out, so messages held in a batch keep counting against the memory budget until then.
- **a reply sender** (a handler's return value published as the reply to a request) is a
  :class:`Settlement`, :class:`eventbus._replies.ReplySender`: on :data:`HANDLED`, ``detail`` is the
  return value; :meth:`~Settlement.settle` may return an awaitable (the publish), which the loop
  awaits before the next message. The loop uses it for requests only, so plain messages keep
  their settlement (none, for pub/sub).
- **recovery** of a recoverable channel happens before the inbox (the source delivers the
  recovered messages in offset order through :meth:`~eventbus._worker.HandlerWorker.put`), so it
  needs no part of the loop.

A handler that needs two settlements (a stream entry answered with a reply) gets one part that
calls both, in order.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Final

from mypy_extensions import mypyc_attr

from eventbus._message import Message

# What became of a message, as a Settlement is told (once per message).
HANDLED: Final = 0  # the handler succeeded, at the first attempt or a retry; detail: its return value
DEAD_LETTERED: Final = 1  # failed for good and stored in the dead letters; detail: the final exception
LOST: Final = 2  # failed for good, but its dead letter could not be written; detail: the final exception
REDELIVERED: Final = 3  # failed, and left to its source to deliver again (Settlement.redelivers)
OUTCOMES: Final = ("handled", "dead-lettered", "lost", "redelivered")


class Undeliverable(Exception):
    """A message a :class:`Settlement` refused before the handler ran (:meth:`Settlement.refusal`):
    dead-lettered at once and counted as failed, without an attempt."""


@mypyc_attr(allow_interpreted_subclasses=True)
class Ordering:
    """Which message a worker task handles next, when the inbox alone does not say.

    Called only from the worker's tasks, between two awaits: a part needs no lock.
    """

    def __init__(self) -> None:
        self.waiting = 0  # messages the part holds back (neither in the inbox nor being handled)

    def admit(self, msg: Message) -> Message | None:
        """``msg`` was taken off the inbox: the message this task handles now, or None (the part
        keeps ``msg`` for later). May raise :class:`~eventbus.PayloadError` for a message it cannot
        place (a key that cannot be computed): that message then takes the failure path."""
        return msg

    def after(self, msg: Message) -> Message | None:
        """``msg`` is settled: the message this task must handle before taking another from the
        inbox (the next one of its key), or None."""
        return None

    def flush(self) -> Message | None:
        """The inbox is empty and this task is about to park: a message it should handle first
        (a partial batch whose time is up), or None."""
        return None

    def deadline(self) -> float | None:
        """How long (seconds) a parked task may wait before :meth:`flush` is asked again; None: until
        a message arrives."""
        return None

    def abandon(self) -> int:
        """Shutdown: forget what the part holds; returns how many messages that was."""
        waiting = self.waiting
        self.waiting = 0
        return waiting


@mypyc_attr(allow_interpreted_subclasses=True)
class Settlement:
    """What to do once a message's outcome is known (the base does nothing)."""

    def refusal(self, msg: Message) -> str | None:
        """A reason not to run the handler on ``msg`` at all (it is then dead-lettered and counted
        as failed, without an attempt), or None."""
        return None

    def redelivers(self, msg: Message) -> bool:
        """``msg`` failed its last attempt in this process: True if its source delivers it again,
        so it is left alone (outcome :data:`REDELIVERED`) instead of being dead-lettered now."""
        return False

    def dead_letter_fields(self, msg: Message) -> dict[str, Any] | None:
        """Fields stored with ``msg``'s dead letter besides the usual ones (a stream entry's id)."""
        return None

    def settle(self, msg: Message, outcome: int, detail: object) -> Awaitable[None] | None:
        """``msg``'s outcome (one of :data:`OUTCOMES`' indices), exactly once per message; an
        awaitable returned here is awaited by the worker task before it takes the next message."""
        return None

    def stop(self) -> None:
        """The worker stopped: write what the part's logs held back."""
