"""What a handler (or a lifecycle hook) gets besides the message."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from eventbus._channels import Channel
    from eventbus._deadletter import DeadLetterStore
    from eventbus._publisher import Publisher
    from eventbus._stats import BusStats


@dataclass(frozen=True, slots=True)
class ServerInfo:
    """Where the runner's Redis came from, for apps whose behaviour should depend on it.

    An app that writes example data (a demo) must not do so into a database someone named on
    purpose, and may treat a server that lives and dies with the run differently from one that
    outlives it. ``url`` has any password masked; ``source`` is where it came from, named as in the
    startup log line ("--url", "code", "$EVENTBUS_URL", "default" or "$EVENTBUS_DEFAULT_URL",
    "embedded", "memory"); ``explicit`` is True when the
    URL was given (an argument, ``--url`` or ``EVENTBUS_URL``) rather than the local default;
    ``owned`` is True when the runner started the server itself (the embedded Redis, the
    in-memory broker of tests): nothing else has data there, and it is gone after the run.
    """

    url: str
    source: str
    explicit: bool
    owned: bool


# What a Context built without server details reports: the cautious answer (explicit, not owned).
UNKNOWN_SERVER = ServerInfo(url="", source="unknown", explicit=True, owned=False)


class Context:
    """Shared services for handlers: a Redis command client, publishing, a logger, app state.

    ``redis`` is one client shared by every handler (a bounded pool that waits when all its
    connections are busy), separate from the subscription connection. ``state`` is one dict for
    the whole app: startup hooks put long-lived clients there for handlers to use. ``stopping``
    is set when the runner stops reading (a signal, ``request_stop``): a background task started by
    a startup hook (a producer, a poller) should wind down when it is set. ``server`` says where
    the Redis in use came from (:class:`ServerInfo`). ``dead_letters`` is the app's dead-letter store
    (:class:`~eventbus.DeadLetterStore`); a startup hook may point it at a stream of the app's own
    (``ctx.dead_letters.stream = "myapp:dead-letter"``), as a demo that keeps its data under a key
    prefix does.
    """

    __slots__ = ("dead_letters", "handler", "log", "publisher", "redis", "server", "state", "stats", "stopping")

    def __init__(
        self,
        *,
        redis: Redis,
        publisher: Publisher,
        state: dict[str, Any],
        stats: BusStats,
        handler: str | None = None,
        stopping: asyncio.Event | None = None,
        server: ServerInfo = UNKNOWN_SERVER,
        dead_letters: DeadLetterStore | None = None,
    ) -> None:
        # Typed as redis-py's asyncio client, so editors complete ctx.redis.hset(...). It is one
        # (or behaves as one): the auto-pipelining client, fakeredis in memory; on a cluster,
        # redis-py's RedisCluster, which has the same command methods.
        self.redis: Redis = redis
        self.server = server
        self.dead_letters = dead_letters
        self.stopping = stopping if stopping is not None else asyncio.Event()
        self.publisher = publisher
        self.state = state
        self.stats = stats
        self.handler = handler
        logger = logging.getLogger("eventbus.handler" if handler is None else f"eventbus.handler.{handler}")
        self.log = logging.LoggerAdapter(logger, {"handler": handler})

    async def publish(self, channel: str | Channel, data: Any, *, sharded: bool = False) -> int:
        """Publish ``data`` (bytes, str, number, or JSON-serializable) to ``channel``.

        Returns the number of subscribers that received it, as Redis PUBLISH does.
        ``sharded=True`` publishes with SPUBLISH (sharded pub/sub); a recoverable
        :class:`~eventbus.Channel` is kept in its history too.
        """
        return await self.publisher.publish(channel, data, sharded=sharded)

    async def request(self, channel: str, data: Any, **options: Any) -> Any:
        """Send a request and return the first reply; see :meth:`eventbus.Publisher.request`."""
        return await self.publisher.request(channel, data, **options)

    async def request_all(self, channel: str, data: Any, **options: Any) -> list[Any]:
        """Send a request and gather the replies; see :meth:`eventbus.Publisher.request_all`."""
        return await self.publisher.request_all(channel, data, **options)

    async def append(self, stream: str, data: Any, *, maxlen: int | None = None) -> str:
        """Append an entry to ``stream`` (XADD); see :meth:`eventbus.Publisher.append`."""
        return await self.publisher.append(stream, data, maxlen=maxlen)

    def for_handler(self, handler: str) -> Context:
        """A copy for one handler: same services, its own name and logger."""
        return Context(
            redis=self.redis,
            publisher=self.publisher,
            state=self.state,
            stats=self.stats,
            handler=handler,
            stopping=self.stopping,
            server=self.server,
            dead_letters=self.dead_letters,
        )
