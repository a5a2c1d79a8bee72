"""What a handler (or a lifecycle hook) gets besides the message."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eventbus.publisher import Publisher
    from eventbus.stats import BusStats


class Context:
    """Shared services for handlers: a Redis command client, publishing, a logger, app state.

    ``redis`` is one client shared by every handler (a bounded pool that waits when all its
    connections are busy), separate from the subscription connection. ``state`` is one dict for
    the whole app: startup hooks put long-lived clients there for handlers to use. ``stopping``
    is set when the runner stops reading (a signal, ``request_stop``): a background task started by
    a startup hook (a producer, a poller) should wind down when it is set.
    """

    __slots__ = ("handler", "log", "publisher", "redis", "state", "stats", "stopping")

    def __init__(
        self,
        *,
        redis: Any,
        publisher: Publisher,
        state: dict[str, Any],
        stats: BusStats,
        handler: str | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.redis = redis
        self.stopping = stopping if stopping is not None else asyncio.Event()
        self.publisher = publisher
        self.state = state
        self.stats = stats
        self.handler = handler
        logger = logging.getLogger("eventbus.handler" if handler is None else f"eventbus.handler.{handler}")
        self.log = logging.LoggerAdapter(logger, {"handler": handler})

    async def publish(self, channel: str, data: Any, *, sharded: bool = False) -> int:
        """Publish ``data`` (bytes, str, number, or JSON-serializable) to ``channel``.

        Returns the number of subscribers that received it, as Redis PUBLISH does.
        ``sharded=True`` publishes with SPUBLISH (sharded pub/sub).
        """
        return await self.publisher.publish(channel, data, sharded=sharded)

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
        )
