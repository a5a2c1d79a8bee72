"""The in-memory backend: Redis Pub/Sub semantics without a server, for users' unit tests.

Delivery follows Redis: PUBLISH returns the number of receptions; every subscriber to the exact
channel gets a ``message``, then every matching pattern a ``pmessage`` (so one subscriber with a
channel and a matching pattern receives the message twice), and patterns match with Redis's own
glob rules. The command client is fakeredis, whose ``publish`` is routed through this broker.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import fakeredis

from eventbus._backends.base import Consume, OneReply, client_publish
from eventbus._channels import Channel
from eventbus._flow import ReadGate
from eventbus._glob import glob_match
from eventbus._history import History, HistoryPage, envelope, format_position, parse_position
from eventbus._names import decode_name, encode_name
from eventbus._settings import ConnectionSettings
from eventbus._stats import BusStats

_key = encode_name


_epochs = itertools.count(1)


class _ChannelLog:
    """One recoverable channel's history in memory: what Redis keeps in its stream."""

    def __init__(self, lost: bool = False) -> None:
        # A number, as Redis's are; ending in 1 where it replaces a history that was lost (not
        # expired), as Redis's does when a publisher names the epoch it saw (eventbus._history).
        self.epoch = b"%d%d" % (next(_epochs), 1 if lost else 0)
        self.top = 0
        self.entries: deque[tuple[int, bytes]] = deque()
        self.expires: float | None = None


class MemoryHistory:
    """:class:`~eventbus._history.History` on the in-memory broker: the same semantics as Redis's
    (exact ``history`` bound, ``ttl`` after the last publish, a new epoch when the history is lost)."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.broker = broker

    async def publish(self, channel: Channel, payload: bytes) -> int:
        log = self.broker.channel_log(channel.name, create=True)
        assert log is not None
        log.top += 1
        log.entries.append((log.top, payload))
        while len(log.entries) > channel.history:
            log.entries.popleft()
        log.expires = None if channel.ttl is None else time.monotonic() + channel.ttl
        return self.broker.publish(channel.name, envelope(log.top, log.epoch, payload), sharded=channel.sharded)

    async def read(self, channel: str, first: int, count: int, epoch: bytes = b"") -> HistoryPage:
        # No failovers here: only the current epoch is ever read.
        log = self.broker.channel_log(channel)
        if log is None:
            return HistoryPage(b"", 0, 0, [])
        entries = [entry for entry in log.entries if entry[0] >= first][:count] if count else []
        return HistoryPage(log.epoch, log.top, entries[0][0] if entries else 0, [p for _, p in entries])

    async def channels(self) -> list[tuple[str, bytes, int]]:
        found = []
        for name in list(self.broker.logs):
            log = self.broker.channel_log(name)  # expires it, as Redis would have
            if log is not None:
                found.append((name, log.epoch, log.top))
        return found

    async def claim_position(self, channel: str, identity: str, owner: bytes) -> bytes | None:
        positions = self.broker.positions
        old = positions.get((channel, identity))
        if old is not None:
            saved = parse_position(old)
            epoch, offset = (saved.epoch, saved.offset) if saved is not None else (b"", 0)
            positions[(channel, identity)] = format_position(epoch, offset, owner, False)
        return old

    async def save_position(self, channel: str, identity: str, value: bytes, owner: bytes, ttl_ms: int) -> bool:
        positions = self.broker.positions
        old = positions.get((channel, identity))
        if old is not None and b"|" + owner + b"|" not in old:
            return False
        positions[(channel, identity)] = value
        return True


class MemoryBroker:
    """One in-process "server": subscribers, a fakeredis keyspace, and a publish that fans out."""

    def __init__(self) -> None:
        self.server = fakeredis.FakeServer()
        self.subscribers: list[MemorySubscriber] = []
        self.published = 0
        self.logs: dict[str, _ChannelLog] = {}  # recoverable channels' histories
        self.lost: set[str] = set()  # channels whose history was lost, not yet published again
        # Resumed handlers' positions, (channel, identity) -> record (eventbus._resume).
        self.positions: dict[tuple[str, str], bytes] = {}

    def channel_log(self, channel: str, *, create: bool = False) -> _ChannelLog | None:
        log = self.logs.get(channel)
        if log is not None and log.expires is not None and time.monotonic() >= log.expires:
            del self.logs[channel]  # expired, as Redis expires both keys
            log = None
        if log is None and create:
            log = self.logs[channel] = _ChannelLog(lost=channel in self.lost)
            self.lost.discard(channel)
        return log

    def lose_history(self, channel: str | None = None) -> None:
        """Forget one channel's history (or all): what a Redis restart without persistence does."""
        if channel is None:
            self.lost.update(self.logs)
            self.logs.clear()
        elif self.logs.pop(channel, None) is not None:
            self.lost.add(channel)

    def client(self) -> Any:
        """A redis.asyncio-compatible client on this broker's keyspace."""
        client = fakeredis.aioredis.FakeRedis(server=self.server)

        async def publish(channel: str | bytes, message: Any, **_: Any) -> int:
            data = message if isinstance(message, bytes) else str(message).encode()
            return self.publish(channel if isinstance(channel, str) else decode_name(channel), data)

        async def spublish(channel: str | bytes, message: Any, **_: Any) -> int:
            data = message if isinstance(message, bytes) else str(message).encode()
            return self.publish(channel if isinstance(channel, str) else decode_name(channel), data, sharded=True)

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
    """The in-memory twin of :class:`~eventbus._backends.subscriber.RedisSubscriber`.

    ``sharded``: subscribe the sharded namespace (SSUBSCRIBE) instead of the plain one.
    """

    def __init__(self, broker: MemoryBroker, gate: ReadGate | None = None, *, sharded: bool = False) -> None:
        self.broker = broker
        self.is_sharded = sharded
        self.channel_keys: set[bytes] = set()
        self.pattern_keys: list[bytes] = []
        self.sharded_keys: set[bytes] = set()
        self._consume: Consume | None = None
        self.gate = gate if gate is not None else ReadGate()
        # While paused (overflow="pause") replies wait here, as they would in Redis's output
        # buffer for a connection nobody reads (without its limit: nothing is disconnected).
        self._held: deque[list[bytes]] | None = None
        self.disconnected = False  # a simulated gap (TestBus.gap): what is published is lost
        self.resubscribed: list[Callable[[], None]] = []  # told after a gap, as RedisSubscriber's

    async def start(self, consume: Consume, channels: Sequence[str], patterns: Sequence[str]) -> None:
        self._consume = consume
        if self.is_sharded:
            self.sharded_keys = {_key(c) for c in channels}
        else:
            self.channel_keys = {_key(c) for c in channels}
            self.pattern_keys = list(dict.fromkeys(_key(p) for p in patterns))
        self.broker.subscribers.append(self)
        self.gate.attach(self)

    def disconnect(self) -> None:
        """Start a simulated gap: messages published until :meth:`reconnect` are lost to us."""
        self.disconnected = True

    def reconnect(self) -> None:
        """End a simulated gap: resubscribed, as the Redis subscriber is after a reconnect."""
        self.disconnected = False
        for listener in self.resubscribed:
            listener()

    async def add_channels(self, channels: Sequence[str]) -> None:
        """Subscribe more channels, as :meth:`RedisSubscriber.add_channels` does."""
        self.channel_keys |= {_key(c) for c in channels}

    def deliver(self, reply: list[bytes]) -> None:
        if self.disconnected:
            return
        if self._held is not None:
            self._held.append(reply)
        elif self._consume is not None:
            self._consume(OneReply(reply))

    def pause_reading(self) -> None:
        if self._held is None:
            self._held = deque()

    def resume_reading(self) -> None:
        held, self._held = self._held, None
        while held:
            if self._held is not None:  # paused again by what was just delivered
                self._held.extendleft(reversed(held))
                return
            self.deliver(held.popleft())

    async def stop(self) -> None:
        self.gate.detach(self)
        if self in self.broker.subscribers:
            self.broker.subscribers.remove(self)
        self._consume = None
        self._held = None

    def is_connected(self) -> bool:
        return self._consume is not None

    def problems(self) -> list[str]:
        return []  # nothing between the broker and its subscribers can fail


class MemoryBackend:
    """``memory://``: a :class:`MemoryBroker` (a new one unless given), for tests and trying things out."""

    url = "memory://"
    source = "memory"
    explicit = False
    owned = True

    def __init__(self, settings: ConnectionSettings, broker: MemoryBroker | None = None) -> None:
        self.settings = settings
        self.broker = broker if broker is not None else MemoryBroker()
        self.redis: Any = self.broker.client()
        # The client's publish is the broker's: ctx.redis.publish and ctx.publish agree.
        self.publish = client_publish(self.redis)
        self.history: History = MemoryHistory(self.broker)

    def subscriber(self, stats: BusStats) -> MemorySubscriber:
        return MemorySubscriber(self.broker, self.settings.gate)

    def sharded_subscriber(self, stats: BusStats) -> MemorySubscriber:
        # In memory, sharded channels are one more namespace of the same broker.
        return MemorySubscriber(self.broker, self.settings.gate, sharded=True)

    def stream_client(self) -> Any:
        return self.broker.client()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    def kill(self) -> None:
        """Nothing runs outside this process."""
