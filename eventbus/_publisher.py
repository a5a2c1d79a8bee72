"""Publishing from producer code: ``async with eventbus.connect() as bus: await bus.publish(...)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from eventbus._channels import Channel
from eventbus._errors import ConfigError, RemoteError
from eventbus._history import History
from eventbus._names import encode_name
from eventbus._payloads import encode_payload, stream_fields
from eventbus._requests import DEFAULT_TIMEOUT

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from eventbus._requests import Requester

PublishFn = Callable[[str, bytes], Awaitable[int]]

# Tracing of stream appends, off unless eventbus.middlewares.tracing.trace_publishing() is called:
# given the stream and the entry's fields, it adds the trace context to the fields and returns the
# producer span as a context manager, which yields a function to report the new entry's id.
AppendTracer = Callable[[str, dict[str, Any]], AbstractContextManager[Callable[[str], None]]]
_append_tracer: AppendTracer | None = None


def set_append_tracer(tracer: AppendTracer | None) -> None:
    """Install (or, with None, remove) the process-wide tracing of :meth:`Publisher.append`."""
    global _append_tracer
    _append_tracer = tracer


class Publisher:
    """Publishes messages through a backend; the same object backs ``ctx.publish`` in handlers.

    ``redis`` is the backend's command client, for producers that also store data (the olympics
    producer writes an order hash, then publishes its id).
    """

    def __init__(
        self,
        publish: PublishFn,
        redis: Redis,
        close: Callable[[], Awaitable[None]] | None = None,
        history: History | None = None,
    ):
        self._publish = publish
        self.redis: Redis = redis
        self._close = close
        self._history = history
        # Set by whoever owns the reply subscription: the runner, or eventbus.connect().
        self.requester: Requester | None = None

    async def publish(self, channel: str | Channel, data: Any, *, sharded: bool = False) -> int:
        """Publish one message; returns how many subscribers received it.

        ``sharded=True`` sends SPUBLISH, for ``@on(channel, sharded=True)`` subscribers. A
        :class:`~eventbus.Channel` with ``history`` is appended to its history and published with
        its offset, atomically, in one round trip (eventbus._history).
        """
        if isinstance(channel, Channel):
            sharded = sharded or channel.sharded
            if channel.recoverable:
                if self._history is None:
                    raise ConfigError(f"this publisher cannot keep the history of {channel.name!r}")
                return await self._history.publish(channel, encode_payload(data))
            channel = channel.name
        if not isinstance(channel, str) or not channel:
            raise ConfigError(f"channel must be a non-empty string or a Channel, got {channel!r}")
        if sharded:
            return int(await self.redis.spublish(encode_name(channel), encode_payload(data)))
        return await self._publish(channel, encode_payload(data))

    async def send(self, channel: str, payload: bytes, sharded: bool = False) -> int:
        """PUBLISH (or SPUBLISH) ``payload`` as it is, without encoding; returns the receivers."""
        if sharded:
            return int(await self.redis.spublish(encode_name(channel), payload))
        return await self._publish(channel, payload)

    def _requester(self) -> Requester:
        if self.requester is None:
            raise ConfigError("this publisher cannot make requests: it has no reply subscription")
        return self.requester

    async def request(
        self,
        channel: str,
        data: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        reply_type: Any = None,
        sharded: bool = False,
    ) -> Any:
        """Publish a request on ``channel`` and return the first reply.

        The handlers subscribed to ``channel`` receive ``data`` as they receive any message, and
        what a handler returns is the reply. Without ``reply_type`` the reply is a
        :class:`~eventbus.Message` (``.data``, ``.text``, ``.json()``); with it, the reply decoded
        as that type (a msgspec Struct, a pydantic model, a dataclass, ``bytes``, ``dict``, ...).
        Raises :class:`~eventbus.NoResponderError` at once when nothing subscribes to the channel,
        :class:`~eventbus.RequestTimeoutError` (a ``TimeoutError``) after ``timeout`` seconds,
        :class:`~eventbus.RemoteError` when the handler raised (:class:`~eventbus.RemoteRejected`
        for :class:`~eventbus.Reject`), :class:`~eventbus.RequestInterruptedError` when the reply
        connection was lost meanwhile. ``sharded=True`` for ``@on(channel, sharded=True)`` handlers.
        """
        requester = self._requester()
        [reply] = await requester.exchange(channel, data, timeout, 1, sharded, gather=False)
        return requester.result(channel, reply, reply_type)

    async def request_all(
        self,
        channel: str,
        data: Any,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        expected: int | None = None,
        reply_type: Any = None,
        sharded: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Publish a request and gather every reply until ``timeout``, or until ``expected`` arrived.

        Every handler that receives the request replies (each process of a ``--workers N`` run,
        each handler subscribed to the channel). A responder's error is raised once the replies are
        gathered, unless ``return_exceptions=True`` puts it in the list. No reply by the timeout
        is an empty list; nothing subscribed raises :class:`~eventbus.NoResponderError`.
        """
        if expected is not None and (not isinstance(expected, int) or expected < 1):
            raise ConfigError(f"expected must be a positive number of replies, got {expected!r}")
        requester = self._requester()
        replies = await requester.exchange(channel, data, timeout, expected or 0, sharded, gather=True)
        results: list[Any] = []
        for reply in replies:
            try:
                results.append(requester.result(channel, reply, reply_type))
            except RemoteError as exc:
                if not return_exceptions:
                    raise
                results.append(exc)
        return results

    async def append(self, stream: str, data: Any, *, maxlen: int | None = None, approximate: bool = True) -> str:
        """Append an entry to a stream (XADD) for ``@on_stream`` consumers; returns the entry id.

        A dict of flat values (str, bytes, numbers) is stored as the entry's fields; any other
        payload is encoded as :meth:`publish` does and stored in the field ``data``. ``maxlen`` caps
        the stream's length (approximately, as ``MAXLEN ~``, unless ``approximate=False``).
        """
        if not isinstance(stream, str) or not stream:
            raise ConfigError(f"stream must be a non-empty string, got {stream!r}")
        fields: dict[Any, Any] = stream_fields(data)  # Any: redis-py's xadd wants an invariant union type
        tracer = _append_tracer
        if tracer is None:
            entry_id = await self.redis.xadd(stream, fields, maxlen=maxlen, approximate=approximate)
            return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        with tracer(stream, fields) as sent:
            entry_id = await self.redis.xadd(stream, fields, maxlen=maxlen, approximate=approximate)
            text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            sent(text)
            return text

    async def aclose(self) -> None:
        """Close the client this publisher was given to close (``eventbus.connect()``'s); once."""
        if self._close is not None:
            close, self._close = self._close, None
            await close()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
