"""The backend for one Redis server: ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from eventbus._backends.base import ConnectionSettings, client_publish
from eventbus._backends.sharded import ShardedSubscriber
from eventbus._backends.subscriber import RedisSubscriber, command_client
from eventbus._stats import BusStats
from eventbus._urls import autopipeline_enabled

if TYPE_CHECKING:
    from eventbus._backends.embedded import EmbeddedRedis

log = logging.getLogger("eventbus")


class RedisBackend:
    """A command client, the pub/sub subscriber and the sharded one, all on ``url``.

    ``embedded``: the private server started for this run (the backend stops it on closing).
    """

    def __init__(
        self,
        url: str,
        settings: ConnectionSettings,
        *,
        source: str,
        explicit: bool,
        embedded: EmbeddedRedis | None = None,
    ) -> None:
        self.url = url
        self.settings = settings
        self.embedded = embedded
        self.source = "embedded" if embedded is not None else source
        self.explicit = explicit and embedded is None
        self.owned = embedded is not None
        self.autopipeline = autopipeline_enabled(settings.autopipeline)
        if not self.autopipeline:
            log.info("auto-pipelining is off: ctx.redis is redis-py's own client")
        self.redis: Any = self.command_client(settings.max_connections)
        self.publish = client_publish(self.redis)

    def command_client(self, max_connections: int) -> Any:
        return command_client(self.url, max_connections=max_connections, autopipeline=self.autopipeline)

    def subscriber(self, stats: BusStats) -> RedisSubscriber:
        return RedisSubscriber(self.url, stats, self.settings)

    def sharded_subscriber(self, stats: BusStats) -> ShardedSubscriber:
        return ShardedSubscriber([self.url], stats, self.settings)

    def stream_client(self) -> Any:
        # Its own small pool: a blocking XREADGROUP must not hold a connection handlers wait for.
        return self.command_client(2)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            self.embedded = None

    def kill(self) -> None:
        """Stop what this run started at once (a second signal): the embedded server."""
        if self.embedded is not None:
            self.embedded.stop()
