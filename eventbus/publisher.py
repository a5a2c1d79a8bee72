"""Publishing from producer code: ``async with eventbus.connect() as bus: await bus.publish(...)``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from eventbus.codec import encode_payload
from eventbus.errors import ConfigError

PublishFn = Callable[[str, bytes], Awaitable[int]]


class Publisher:
    """Publishes messages through a backend; the same object backs ``ctx.publish`` in handlers.

    ``redis`` is the backend's command client, for producers that also store data (the olympics
    producer writes an order hash, then publishes its id).
    """

    def __init__(self, publish: PublishFn, redis: Any, close: Callable[[], Awaitable[None]] | None = None):
        self._publish = publish
        self.redis = redis
        self._close = close

    async def publish(self, channel: str, data: Any) -> int:
        """Publish one message; returns how many subscribers received it."""
        if not isinstance(channel, str) or not channel:
            raise ConfigError(f"channel must be a non-empty string, got {channel!r}")
        return await self._publish(channel, encode_payload(data))

    async def aclose(self) -> None:
        if self._close is not None:
            close, self._close = self._close, None
            await close()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def connect(url: str | None = None, *, max_connections: int = 64) -> Publisher:
    """A publisher on Redis at ``url`` (default: $EVENTBUS_URL, else redis://localhost:6379/0).

    Use it as an async context manager so its connections are closed.
    """
    from eventbus.config import resolve_url
    from eventbus.redis_backend import command_client

    client = command_client(resolve_url(url).url, max_connections=max_connections)

    async def publish(channel: str, payload: bytes) -> int:
        return int(await client.publish(channel, payload))

    return Publisher(publish, client, client.aclose)
