"""The seam between the runner and a transport: what a backend provides.

A backend (``open_backend`` in :mod:`eventbus._backends`) gives the runner a command client, a
publish function, and *sources*: objects that read messages from somewhere and hand them to a
sink. Every source shares one lifecycle (:class:`Source`): ``start`` (subscribed when it
returns), ``stop_reading`` (before the runner's grace drain) and ``close`` (after it).

The sink (:data:`Consume`) is the engine's ``Dispatcher.consume``: it takes a hiredis-like
reader, routes every complete message in it, and returns the other replies (subscribe
confirmations, PONG, errors) for the connection to match with its pending commands. It is
passed explicitly, so every source (pub/sub, sharded, in memory) takes the same path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from eventbus._history import History
from eventbus._names import encode_name
from eventbus._settings import DEFAULT_MAX_CONNECTIONS, ConnectionSettings
from eventbus._stats import BusStats


class Reader(Protocol):
    """What a sink reads replies from: hiredis.Reader, or :class:`OneReply`."""

    def gets(self) -> Any: ...


# Routes every message buffered in the reader; returns the replies that are not messages.
Consume = Callable[[Reader], list[Any]]
PublishFn = Callable[[str, bytes], Awaitable[int]]


def client_publish(client: Any) -> PublishFn:
    """PUBLISH through a redis.asyncio-compatible client: the one publish path of every backend."""

    async def publish(channel: str, payload: bytes) -> int:
        # As bytes: a channel name that is not UTF-8 (kept as surrogates) goes out as it came in.
        return int(await client.publish(encode_name(channel), payload))

    return publish


class OneReply:
    """A reader that yields one already-parsed reply: for sources that produce replies one by one."""

    __slots__ = ("reply",)

    def __init__(self, reply: list[bytes]) -> None:
        self.reply: list[bytes] | bool = reply

    def gets(self) -> list[bytes] | bool:
        reply, self.reply = self.reply, False
        return reply


class Source(Protocol):
    """Something the runner reads messages from (a subscription connection, a stream consumer).

    ``start``: reading when it returns (subscribed, the group created); an error fails the run's
    start. ``stop_reading``: no new messages (before the grace drain). ``close``: after the drain,
    whatever is owed (stream acknowledgements). ``problems``: why it cannot deliver now (a
    connection down, a group not reading), one line each, empty when it can: ``/readyz`` says them.
    """

    async def start(self) -> None: ...
    async def stop_reading(self) -> None: ...
    async def close(self) -> None: ...
    def problems(self) -> list[str]: ...


class Subscriber(Protocol):
    """A subscription connection (or set of them) that keeps itself subscribed."""

    async def start(self, consume: Consume, channels: Sequence[str], patterns: Sequence[str]) -> None: ...
    async def stop(self) -> None: ...
    def is_connected(self) -> bool: ...
    def problems(self) -> list[str]: ...


class SubscriberSource:
    """A :class:`Subscriber` bound to its sink and names: a :class:`Source` for the runner."""

    def __init__(self, subscriber: Subscriber, consume: Consume, channels: Sequence[str], patterns: Sequence[str]):
        self.subscriber = subscriber
        self._args = (consume, list(channels), list(patterns))

    def __repr__(self) -> str:
        return f"<{type(self.subscriber).__name__} source>"

    async def start(self) -> None:
        await self.subscriber.start(*self._args)

    async def stop_reading(self) -> None:
        await self.subscriber.stop()

    async def close(self) -> None:
        """Nothing to acknowledge: pub/sub has no delivery state."""

    def problems(self) -> list[str]:
        return self.subscriber.problems()


class Backend(Protocol):
    """One transport, opened: what the runner uses of it."""

    url: str  # where it is, for the log (redact it before showing)
    source: str  # where the URL came from ("--url", "$EVENTBUS_URL", "embedded", "memory", ...)
    explicit: bool  # configured, rather than the default
    owned: bool  # started for this run (embedded, memory): it goes away with the run
    redis: Any  # the command client: ``ctx.redis``
    publish: PublishFn  # PUBLISH one payload; returns the number of receivers
    history: History  # recoverable channels' histories: the atomic publish, and the reads of recovery

    def subscriber(self, stats: BusStats) -> Subscriber: ...
    def sharded_subscriber(self, stats: BusStats) -> Subscriber: ...
    def stream_client(self) -> Any: ...
    async def aclose(self) -> None: ...
    def kill(self) -> None: ...


class Transport(Protocol):
    """What a backend module provides for the URL schemes it serves (the table in :mod:`eventbus._backends`).

    A module satisfies it with module-level functions: ``redis``, ``cluster`` and ``sentinel`` do.
    """

    def check_url(self, url: str, where: str, reveal: bool) -> None:
        """The scheme's own grammar: a one-line ConfigError naming the bad part (see ``eventbus._urls.Grammar``)."""

    async def wait_until_reachable(self, url: str, timeout: float, *, quiet: bool = False) -> object:
        """Until ``url`` answers, or a one-line ConnectError after ``timeout`` seconds."""

    async def open_backend(
        self,
        url: str,
        settings: ConnectionSettings,
        *,
        source: str,
        explicit: bool,
        timeout: float,
        quiet: bool = False,
    ) -> Backend:
        """The backend for ``url``, once it answers (within ``timeout``)."""

    def command_client(
        self, url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, autopipeline: bool | None = None
    ) -> Any:
        """A redis.asyncio-compatible command client for producers."""
