"""The responder's side of request/reply: a handler's return value goes back as the reply.

Built once per handler around its invoke callable (middleware included, so middleware and tracing
see requests as messages) and called only for messages that carry a reply address
(:class:`eventbus._envelope.Request`): a handler that is never asked pays nothing for it.

The reply follows the handler's final outcome, as the dead letter does: a failure that will be
retried sends nothing yet; the last attempt's failure, a :class:`~eventbus.Reject` or an invalid
payload sends an error reply with the exception's type name and message (never its traceback).
The failure still takes the handler's usual way (logged, counted, dead-lettered).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from eventbus._context import Context
from eventbus._envelope import Request, pack_error, pack_reply
from eventbus._errors import PayloadError, Reject
from eventbus._logs import LineLimit
from eventbus._message import Message
from eventbus._payloads import encode_payload
from eventbus.middleware import Invoke

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


class Replier:
    """``invoke(msg, ctx)`` for requests: calls the handler, then publishes its reply."""

    def __init__(self, invoke: Invoke, retries: int, handler: str) -> None:
        self._invoke = invoke
        self._retries = retries
        self._handler = handler
        self.lines = LineLimit(log, f"handler {handler}")
        self._in_flight: set[asyncio.Task[None]] = set()
        # id(msg) -> failed attempts so far, while a request is being retried. Per handler: the
        # handlers of one channel share the message object. (The worker retries with that same
        # object, alive meanwhile, so its id is a safe key until the final outcome pops it.)
        self._failures: dict[int, int] = {}

    async def __call__(self, msg: Message, ctx: Context) -> Any:
        assert isinstance(msg, Request)
        try:
            result = await self._invoke(msg, ctx)
            body = b"" if result is None else encode_payload(result)
        except Exception as exc:
            key = id(msg)
            failures = self._failures.pop(key, 0) + 1
            rejected = isinstance(exc, Reject)
            if rejected or isinstance(exc, PayloadError) or failures > self._retries:
                await self._reply(ctx, msg, pack_error(msg.correlation, exc, rejected=rejected))
            else:
                self._failures[key] = failures  # retried: the reply waits for the last attempt
            raise
        if self._failures:
            self._failures.pop(id(msg), None)
        await self._reply(ctx, msg, pack_reply(msg.correlation, body))
        return result

    async def _reply(self, ctx: Context, msg: Request, payload: bytes) -> None:
        if len(self._in_flight) >= MAX_REPLIES_IN_FLIGHT:
            await self._send(ctx, msg, payload)
            return
        task = asyncio.get_running_loop().create_task(self._send(ctx, msg, payload))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)
        _IN_FLIGHT.add(task)
        task.add_done_callback(_IN_FLIGHT.discard)

    async def _send(self, ctx: Context, msg: Request, payload: bytes) -> None:
        stats = ctx.stats.requests
        try:
            await ctx.publisher.send(msg.reply_to, payload)
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
