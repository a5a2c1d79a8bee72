"""The in-memory backend: Redis Pub/Sub semantics without a server, for users' unit tests.

Delivery follows Redis: PUBLISH returns the number of receptions; every subscriber to the exact
channel gets a ``message``, then every matching pattern a ``pmessage`` (so one subscriber with a
channel and a matching pattern receives the message twice), and patterns match with Redis's own
glob rules. The command client is fakeredis, whose ``publish`` is routed through this broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import fakeredis

from eventbus.glob import glob_match
from eventbus.redis_backend import Feed


def _key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class MemoryBroker:
    """One in-process "server": subscribers, a fakeredis keyspace, and a publish that fans out."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.subscribers: list[MemorySubscriber] = []
        self.published = 0

    def client(self) -> Any:
        """A redis.asyncio-compatible client on this broker's keyspace."""
        client = fakeredis.aioredis.FakeRedis(server=self.server)

        async def publish(channel: str | bytes, message: Any, **_: Any) -> int:
            data = message if isinstance(message, bytes) else str(message).encode()
            return self.publish(
                channel if isinstance(channel, str) else channel.decode("utf-8", "surrogateescape"), data
            )

        async def spublish(channel: str | bytes, message: Any, **_: Any) -> int:
            data = message if isinstance(message, bytes) else str(message).encode()
            return self.publish(
                channel if isinstance(channel, str) else channel.decode("utf-8", "surrogateescape"), data, sharded=True
            )

        # ctx.redis.publish / spublish reach this broker's subscribers, not fakeredis's own.
        client.publish = publish  # type: ignore[method-assign,assignment]
        client.spublish = spublish  # type: ignore[method-assign,assignment]
        return client

    def publish(self, channel: str, payload: bytes, *, sharded: bool = False) -> int:
        """PUBLISH (or SPUBLISH, whose channels are a namespace of their own); returns receptions."""
        self.published += 1
        key = _key(channel)
        receivers = 0
        if sharded:
            for subscriber in self.subscribers:
                if key in subscriber.sharded_keys:
                    subscriber.deliver([b"smessage", key, payload])
                    receivers += 1
            return receivers
        for subscriber in self.subscribers:
            if key in subscriber.channel_keys:
                subscriber.deliver([b"message", key, payload])
                receivers += 1
        for subscriber in self.subscribers:
            for pattern in subscriber.pattern_keys:
                if glob_match(pattern, key):
                    subscriber.deliver([b"pmessage", pattern, key, payload])
                    receivers += 1
        return receivers

    async def apublish(self, channel: str, payload: bytes) -> int:
        return self.publish(channel, payload)


class MemorySubscriber:
    """The in-memory twin of :class:`~eventbus.redis_backend.RedisSubscriber`."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker
        self.channel_keys: set[bytes] = set()
        self.pattern_keys: list[bytes] = []
        self.sharded_keys: set[bytes] = set()
        self._feed: Feed | None = None

    async def start(
        self, feed: Feed, channels: Sequence[str], patterns: Sequence[str], sharded: Sequence[str] = ()
    ) -> None:
        self._feed = feed
        self.channel_keys = {_key(c) for c in channels}
        self.pattern_keys = list(dict.fromkeys(_key(p) for p in patterns))
        self.sharded_keys = {_key(c) for c in sharded}
        self.broker.subscribers.append(self)

    def deliver(self, reply: list[bytes]) -> None:
        if self._feed is not None:
            self._feed(reply)

    async def stop(self) -> None:
        if self in self.broker.subscribers:
            self.broker.subscribers.remove(self)
        self._feed = None
