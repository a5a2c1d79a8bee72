"""Resuming after a restart: a handler's position on a recoverable channel, kept in Redis.

A handler subscribed with ``@on(channel, resume=True)`` has, per channel, a
:class:`PositionKeeper`: the history's epoch and the highest offset up to which every message
delivered to the handler is *settled* (handled, dead-lettered, or refused and counted). It is a
watermark, not the last offset delivered: a message still waiting in the inbox, or being handled
when the process dies, is after the saved position, so it is delivered again after a restart
rather than lost. The keeper hears of each message twice: when the source delivers it (the
recovery's delivery, :meth:`PositionKeeper.delivered`) and when the worker settles it
(:class:`ResumeSettlement`, the loop's settlement part).

The positions live next to the history, in ``eventbus:history-pos:{channel}`` (a hash in the
channel's slot; field: the handler's identity; value: ``epoch|offset|owner|clean``), written by
:class:`Resumer` every :data:`SAVE_INTERVAL` seconds when they moved, and once more, marked clean,
after a stop has drained the handlers. The identity is the handler's name, with the worker's
number under ``--workers N`` (each worker receives every message, so each keeps its own
position). A start *claims* its identity (the owner field); a save by a runner that is no longer
the owner is refused, so two runners never overwrite each other's positions: the later start
wins and the earlier one says so and stops saving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from typing import Any

from eventbus._history import SavedPosition, format_position, parse_position
from eventbus._logs import ENV_WORKER
from eventbus._message import Message
from eventbus._parts import Settlement

log = logging.getLogger("eventbus.recovery")

# How often moved positions are written: after a crash, what was handled in the last interval
# before it is handled again (the bound docs/recovery.md states).
SAVE_INTERVAL = 0.2


class TrackedMessage(Message):
    """A message of a recoverable channel delivered to a resumed handler: it knows its offset."""

    __slots__ = ("epoch", "offset")

    def __init__(self, channel: str, data: bytes, pattern: str | None, offset: int, epoch: bytes) -> None:
        super().__init__(channel, data, pattern)
        self.offset = offset
        self.epoch = epoch


class PositionKeeper:
    """One resumed handler on one channel: the settled watermark and what was saved of it."""

    def __init__(self, handler: str, identity: str, channel: str, ttl_ms: int) -> None:
        self.handler = handler
        self.identity = identity
        self.channel = channel
        self.ttl_ms = ttl_ms
        self.epoch = b""
        self.last = 0  # the last offset delivered (or passed over) to the handler
        # Offsets delivered and not yet settled, in delivery (= offset) order.
        self.outstanding: dict[int, None] = {}
        self.saved: tuple[bytes, int] | None = None
        self.taken_over = False
        self.started = False  # positioned at start (begin): saves may begin

    def begin(self, epoch: bytes, offset: int) -> None:
        """Where this run starts (the saved position, or the channel's top on a first start): from
        now on its position is saved."""
        self.epoch, self.last = epoch, offset
        self.outstanding.clear()
        self.started = True

    def delivered(self, offset: int, epoch: bytes) -> None:
        if epoch != self.epoch:
            # A new history: positions in the old one mean nothing now (recovery reported the loss).
            self.epoch = epoch
            self.outstanding.clear()
        self.outstanding[offset] = None
        self.last = offset

    def passed(self, offset: int, epoch: bytes) -> None:
        """A message the handler will never settle (refused over the size cap, dropped): move past."""
        if epoch != self.epoch:
            self.epoch = epoch
            self.outstanding.clear()
        self.last = offset

    def settled(self, offset: int, epoch: bytes) -> None:
        if epoch == self.epoch:
            self.outstanding.pop(offset, None)

    def position(self) -> tuple[bytes, int]:
        """(epoch, offset): every message up to ``offset`` is settled."""
        for first in self.outstanding:
            return self.epoch, first - 1
        return self.epoch, self.last


class ResumeSettlement(Settlement):
    """The settlement part of a resumed handler: each settled message moves its channel's keeper."""

    def __init__(self, keepers: dict[str, PositionKeeper], inner: Settlement | None = None) -> None:
        self.keepers = keepers
        self.inner = inner

    def settle(self, msg: Message, outcome: int, detail: object) -> Any:
        if isinstance(msg, TrackedMessage):
            keeper = self.keepers.get(msg.channel)
            if keeper is not None:
                keeper.settled(msg.offset, msg.epoch)
        return self.inner.settle(msg, outcome, detail) if self.inner is not None else None


def owner_token() -> bytes:
    """Who holds a position: this process, told apart from a restart of it by a random part."""
    host = socket.gethostname().replace("|", "_")
    return f"{host}:{os.getpid()}:{secrets.token_hex(4)}".encode()


def identity_for(handler: str) -> str:
    """A resumed handler's identity: its name, and ``#i`` in worker ``i`` of ``--workers N``
    (each worker receives every message, so each keeps a position of its own)."""
    index = os.environ.get(ENV_WORKER)
    return f"{handler}#{int(index) + 1}" if index is not None and index.isdigit() else handler


class Resumer:
    """The keepers of one runner: their claims at start, the periodic saves, the clean save at stop."""

    def __init__(self, history: Any) -> None:
        self.history = history
        self.owner = owner_token()
        self.keepers: list[PositionKeeper] = []
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    async def claim(self, keeper: PositionKeeper) -> SavedPosition | None:
        """Take ``keeper``'s identity over for this process; the position its last holder saved."""
        return parse_position(await self.history.claim_position(keeper.channel, keeper.identity, self.owner))

    def start(self) -> None:
        if self.keepers and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._save_loop(), name="eventbus:resume")

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(SAVE_INTERVAL)
            await self.save(clean=False)

    async def save(self, *, clean: bool) -> None:
        """Write every position that moved since it was last written (all of them when ``clean``)."""
        keepers = [k for k in self.keepers if k.started and not k.taken_over and (clean or k.position() != k.saved)]
        if not keepers:
            return
        positions = [k.position() for k in keepers]
        results = await asyncio.gather(
            *(
                self.history.save_position(
                    k.channel, k.identity, format_position(epoch, offset, self.owner, clean), self.owner, k.ttl_ms
                )
                for k, (epoch, offset) in zip(keepers, positions, strict=True)
            ),
            return_exceptions=True,
        )
        for keeper, position, result in zip(keepers, positions, results, strict=True):
            if isinstance(result, BaseException):
                self._failures += 1
                if self._failures == 1 or self._failures % 100 == 0:
                    log.warning(
                        "could not save the position of handler %s on %r (%d failure(s) so far; it is saved "
                        "again once Redis answers; a restart meanwhile resumes from the last saved one): %s",
                        keeper.handler,
                        keeper.channel,
                        self._failures,
                        result,
                    )
            elif not result:
                keeper.taken_over = True
                log.error(
                    "handler %s: its position on %r (identity %r) was claimed by another runner that started "
                    "with the same identity; this runner no longer saves it, and resumes from the other's "
                    "position after a restart. Give each runner's resumed handler its own name "
                    "(@on(..., name=...)).",
                    keeper.handler,
                    keeper.channel,
                    keeper.identity,
                )
            else:
                keeper.saved = position

    async def close(self) -> None:
        """The handlers have drained: stop the periodic saves and write each position, clean."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        try:
            await self.save(clean=True)
        except Exception:
            log.warning("could not save the resumed handlers' positions at stop", exc_info=True)
