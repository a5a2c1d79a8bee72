"""The responder's side of request/reply: a handler's return value goes back as the reply.

:class:`ReplySender` is a settlement part of the worker loop (:mod:`eventbus._parts`): the loop
hands a request (:class:`eventbus._envelope.Request`, a message with a reply address) to it, and
any other message to the handler's own part, so a handler that is never asked pays nothing for it.

It is told each request's final outcome once, after the handler's usual failure path (retries,
logged, counted, dead-lettered), and replies as the dead letter does, to the last attempt: the
return value when the request was handled; when it failed for good, an error reply with the final
exception's type name and message (never its traceback), ``rejected`` for a
:class:`~eventbus.Reject`. A retried attempt sends nothing, so a request can succeed on a retry.
The handler's own part, if it has one, settles the message afterwards.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any

from eventbus._context import Context
from eventbus._envelope import Request, pack_error, pack_reply
from eventbus._errors import Reject
from eventbus._logs import LineLimit
from eventbus._message import Message
from eventbus._parts import HANDLED, REDELIVERED, Settlement
from eventbus._payloads import encode_payload

log = logging.getLogger("eventbus.replies")

# Replies being published in the background, per handler, before the next one is awaited in line:
# a handler does not wait for its reply's round trip (the command client pipelines the replies of
# many requests), and a Redis that does not keep up slows the handler down instead of piling up.
MAX_REPLIES_IN_FLIGHT = 1000
# Every reply of this process still being published, for the runner to wait for before its command
# client closes (finish_replies): a reply is part of the work a graceful stop lets finish.
_IN_FLIGHT: set[asyncio.Task[None]] = set()


async def finish_replies(timeout: float) -> int:
    """Wait up to ``timeout`` for the replies being published; returns how many did not make it."""
    pending = [task for task in _IN_FLIGHT if task.get_loop() is asyncio.get_running_loop()]
    if not pending:
        return 0
    _, late = await asyncio.wait(pending, timeout=timeout)
    for task in late:
        task.cancel()
    return len(late)


class ReplySender(Settlement):
    """The settlement of a handler's requests: publishes the reply, then settles as ``inner`` does."""

    def __init__(self, ctx: Context, handler: str, inner: Settlement | None = None) -> None:
        self._ctx = ctx
        self._handler = handler
        self._inner = inner
        self.lines = LineLimit(log, f"handler {handler}")
        self._in_flight: set[asyncio.Task[None]] = set()

    # The handler's own part decides these, for requests as for every other message.
    def refusal(self, msg: Message) -> str | None:
        return self._inner.refusal(msg) if self._inner is not None else None

    def redelivers(self, msg: Message) -> bool:
        return self._inner.redelivers(msg) if self._inner is not None else False

    def dead_letter_fields(self, msg: Message) -> dict[str, Any] | None:
        return self._inner.dead_letter_fields(msg) if self._inner is not None else None

    def settle(self, msg: Message, outcome: int, detail: object) -> Awaitable[None] | None:
        sending = self._answer(msg, outcome, detail) if isinstance(msg, Request) else None
        settling = self._inner.settle(msg, outcome, detail) if self._inner is not None else None
        if sending is None or settling is None:
            return sending if settling is None else settling
        return _both(sending, settling)

    def stop(self) -> None:
        if self._inner is not None:
            self._inner.stop()
        self.lines.flush()

    def _answer(self, msg: Request, outcome: int, detail: object) -> Awaitable[None] | None:
        """Publish the reply to ``msg``: in the background, or (the handler's limit reached) in line."""
        if outcome == REDELIVERED:
            return None  # not final: the delivery that settles it replies
        if outcome == HANDLED:
            try:
                payload = pack_reply(msg.correlation, b"" if detail is None else encode_payload(detail))
            except Exception as exc:  # noqa: BLE001 - the requester hears why instead of timing out
                if self.lines.allow("unencodable reply"):
                    log.warning(
                        "handler %s: its return value to a request on %r cannot be encoded: %s: %s",
                        self._handler,
                        msg.channel,
                        type(exc).__name__,
                        exc,
                    )
                payload = pack_error(msg.correlation, exc, rejected=False)
        else:
            error = detail if isinstance(detail, BaseException) else RuntimeError(str(detail))
            payload = pack_error(msg.correlation, error, rejected=isinstance(error, Reject))
        if len(self._in_flight) >= MAX_REPLIES_IN_FLIGHT:
            return self._send(msg, payload)
        task = asyncio.get_running_loop().create_task(self._send(msg, payload))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        _IN_FLIGHT.add(task)
        task.add_done_callback(_IN_FLIGHT.discard)
        return None

    async def _send(self, msg: Request, payload: bytes) -> None:
        stats = self._ctx.stats.requests
        try:
            await self._ctx.publisher.send(msg.reply_to, payload)
        except Exception as exc:  # noqa: BLE001 - the handler ran: its outcome stands, the reply is lost
            stats.reply_failures += 1
            if self.lines.allow("reply failed"):
                log.warning(
                    "handler %s could not send its reply to a request on %r: %s: %s",
                    self._handler,
                    msg.channel,
                    type(exc).__name__,
                    exc,
                )
            return
        stats.replies_sent += 1


async def _both(first: Awaitable[None], second: Awaitable[None]) -> None:
    await first
    await second
