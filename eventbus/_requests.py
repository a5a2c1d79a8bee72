"""The requester's side of request/reply: one reply channel per process, a correlation id per request.

The reply channel is subscribed once, on the process's subscription connection (the runner's, or
for ``eventbus.connect()`` one opened at the first request), and every reply is matched to its
request by the correlation id in the reply's header (the wire format is :mod:`eventbus._envelope`).
So a thousand concurrent requests cost a thousand futures and no connection.

What can go wrong has its own error (:mod:`eventbus._errors`): nobody subscribes to the channel
(PUBLISH counted no receiver: at once, not after the timeout), no reply in time, the responder
raised, the reply connection was lost meanwhile. A reply that arrives after its request was
answered or gave up is dropped and counted (``late_replies``), never handed to another request.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from eventbus._envelope import Reply, pack_request, read_reply
from eventbus._errors import (
    ConfigError,
    NoResponderError,
    RemoteError,
    RemoteRejected,
    RequestInterruptedError,
    RequestTimeoutError,
)
from eventbus._logs import LineLimit
from eventbus._message import Message
from eventbus._payloads import Decoder, build_decoder, encode_payload
from eventbus._stats import RequestStats

log = logging.getLogger("eventbus.requests")

DEFAULT_TIMEOUT = 5.0
REPLY_CHANNEL_PREFIX = "eventbus:reply:"

# PUBLISH (or SPUBLISH) a payload as it is; returns the number of receivers.
SendFn = Callable[[str, bytes, bool], Awaitable[int]]

# Tracing of requests, off unless eventbus.middlewares.tracing.trace_publishing() is called: given
# the channel and the request's headers, it adds the trace context to the headers and returns the
# span of the round trip as a context manager, which yields a function to report the outcome: how
# many replies arrived, and how many of them were the responder's errors.
RequestTracer = Callable[[str, dict[str, str]], AbstractContextManager[Callable[[int, int], None]]]
_request_tracer: RequestTracer | None = None


def set_request_tracer(tracer: RequestTracer | None) -> None:
    """Install (or, with None, remove) the process-wide tracing of requests."""
    global _request_tracer
    _request_tracer = tracer


def reply_channel() -> str:
    """A reply channel for one process: unique, so that no other process receives its replies."""
    return f"{REPLY_CHANNEL_PREFIX}{uuid.uuid4().hex}"


class _Waiting:
    """One request waiting for its reply (``request``) or gathering replies (``request_all``)."""

    __slots__ = ("channel", "expected", "future", "replies")

    def __init__(self, channel: str, future: asyncio.Future[None], expected: int) -> None:
        self.channel = channel
        self.future = future
        self.expected = expected
        self.replies: list[Reply] = []


class Requester:
    """Sends requests and matches the replies that arrive on ``reply_to``.

    ``send``: PUBLISH/SPUBLISH of a ready payload. ``connected``/``wait_connected``: whether the
    reply channel's subscription is live now, and waiting until it is (a request sent before its
    reply channel is subscribed would lose its reply). ``counts_receivers``: False where PUBLISH's
    count is not every subscriber's (a cluster node counts only its own), so no "no responder".
    """

    def __init__(
        self,
        send: SendFn,
        stats: RequestStats,
        *,
        reply_to: str | None = None,
        counts_receivers: bool = True,
        connected: Callable[[], bool] | None = None,
        wait_connected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.send = send
        self.stats = stats
        self.reply_to = reply_to if reply_to is not None else reply_channel()
        self.counts_receivers = counts_receivers
        self.connected = connected
        self.wait_connected = wait_connected
        self._pending: dict[str, _Waiting] = {}
        self._next_id = 0
        self._decoders: dict[Any, Decoder] = {}
        self.lines = LineLimit(log, "requests")

    # -- the reader's side -------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        """A message on the reply channel (called by the reader, synchronously)."""
        reply = read_reply(data)
        if reply is None:
            self.stats.late_replies += 1
            if self.lines.allow("not a reply"):
                log.warning("dropped a message on the reply channel %s that is not a reply", self.reply_to)
            return
        waiting = self._pending.get(reply.correlation)
        if waiting is None:
            # Answered already (another responder was first), timed out or interrupted: never
            # handed to another request, whose id it cannot have.
            self.stats.late_replies += 1
            if self.lines.allow("late reply", logging.DEBUG):
                log.debug("dropped a late reply (request %s no longer waiting)", reply.correlation)
            return
        waiting.replies.append(reply)
        if len(waiting.replies) >= waiting.expected:
            del self._pending[reply.correlation]
            if not waiting.future.done():
                waiting.future.set_result(None)

    def connection_lost(self, reason: str) -> None:
        """The reply channel's connection is gone: replies published until it is back are lost."""
        pending, self._pending = self._pending, {}
        for waiting in pending.values():
            if not waiting.future.done():
                self.stats.interrupted += 1
                waiting.future.set_exception(RequestInterruptedError(waiting.channel, reason))

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- the caller's side -------------------------------------------------------------------

    async def exchange(
        self, channel: str, data: Any, timeout: float, expected: int, sharded: bool, *, gather: bool
    ) -> list[Reply]:
        """Publish a request and wait for ``expected`` replies (``gather``: all until the timeout
        when ``expected`` is 0, and no error for fewer); :meth:`result` makes each one a value."""
        if not isinstance(channel, str) or not channel:
            raise ConfigError(f"channel must be a non-empty string, got {channel!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        body = encode_payload(data)
        self._next_id += 1
        correlation = f"{self._next_id:x}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # request_all without an expected count gathers until the timeout: no count completes it.
        waiting = _Waiting(channel, future, expected if expected else (1 << 62) if gather else 1)
        tracer = _request_tracer
        headers: dict[str, str] = {}
        try:
            async with asyncio.timeout(timeout):
                if self.connected is not None and not self.connected():
                    assert self.wait_connected is not None
                    await self.wait_connected()
                self._pending[correlation] = waiting
                if tracer is None:
                    await self._publish(channel, self.reply_to, correlation, body, headers, sharded)
                    await future
                else:
                    with tracer(channel, headers) as outcome:
                        await self._publish(channel, self.reply_to, correlation, body, headers, sharded)
                        await future
                        outcome(len(waiting.replies), sum(r.status != "ok" for r in waiting.replies))
        except TimeoutError as exc:
            if isinstance(exc, RequestTimeoutError):
                raise
            if gather:
                self.stats.answered += 1
                return waiting.replies
            self.stats.timeouts += 1
            raise RequestTimeoutError(channel, timeout) from None
        finally:
            self._pending.pop(correlation, None)
        self.stats.answered += 1
        return waiting.replies

    async def _publish(
        self, channel: str, reply_to: str, correlation: str, body: bytes, headers: dict[str, str], sharded: bool
    ) -> None:
        receivers = await self.send(channel, pack_request(reply_to, correlation, body, headers), sharded)
        self.stats.sent += 1
        if receivers == 0 and self.counts_receivers:
            self.stats.no_responder += 1
            raise NoResponderError(channel)

    def result(self, channel: str, reply: Reply, reply_type: Any) -> Any:
        """The reply as the caller asked for it, or the responder's error raised."""
        if reply.status != "ok":
            self.stats.remote_errors += 1
            error = RemoteRejected if reply.status == "rejected" else RemoteError
            raise error(channel, reply.error_type or "Exception", reply.error_message)
        msg = Message(channel, reply.body, None)
        if reply_type is None or reply_type is Message:
            return msg
        decoder = self._decoders.get(reply_type)
        if decoder is None:
            decoder = self._decoders[reply_type] = build_decoder(reply_type, f"reply on {channel!r}")
        return decoder.decode(msg)


class LazyRequester(Requester):
    """A requester whose reply subscription is opened at the first request (``eventbus.connect()``)."""

    def __init__(self, send: SendFn, stats: RequestStats, open_inbox: Callable[[Requester], Awaitable[Any]]) -> None:
        super().__init__(send, stats, connected=self._is_open, wait_connected=self._open)
        self._open_inbox = open_inbox
        self._opening: asyncio.Task[Any] | None = None
        self.inbox: Any = None  # what open_inbox returned: closed by the publisher

    def _is_open(self) -> bool:
        inbox = self.inbox
        return inbox is not None and bool(inbox.is_connected())

    async def _open(self) -> None:
        if self.inbox is not None:
            await self.inbox.wait_connected()
            return
        if self._opening is None:
            self._opening = asyncio.ensure_future(self._open_inbox(self))
        try:
            # Shielded: one caller's timeout must not cancel the opening the others wait for.
            self.inbox = await asyncio.shield(self._opening)
        except BaseException:
            if self._opening.done():
                self._opening = None  # failed: the next request tries again
            raise
