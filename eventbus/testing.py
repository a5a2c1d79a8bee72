"""Test helpers for users' handler modules: run them in memory, publish, wait, inspect.

    from eventbus.testing import TestBus

    async def test_counts_orders():
        async with TestBus("myapp.handlers") as bus:
            await bus.publish("purchase_orders", "42")
            await bus.drain()
            assert await bus.redis.get("orders_seen") == b"1"

Handlers' typed payloads work the same (``await bus.publish("orders", Order(...))``), and
``bus.published("orders:stored", Stored)`` returns what was published to a channel, decoded by the
codec a handler taking ``Stored`` would use.

The bus follows Redis semantics (channel vs pattern delivery, Redis's glob rules, PUBLISH's
receiver count), and ``bus.redis`` is a fakeredis client that the handlers' ``ctx.redis`` shares.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

from eventbus._backends.memory import MemoryBroker, MemoryHistory, MemorySubscriber
from eventbus._channels import Channel, channel_name
from eventbus._deadletter import DeadLetter
from eventbus._history import parse_envelope
from eventbus._message import Message
from eventbus._payloads import build_decoder, encode_payload
from eventbus._runner import Runner
from eventbus._stats import BusStats, HandlerStats

__all__ = ["TestBus"]


class _RecordingBroker(MemoryBroker):
    """The in-memory broker, keeping what was published on each channel for the test to inspect."""

    def __init__(self) -> None:
        super().__init__()
        self.log: dict[str, list[bytes]] = {}

    def publish(self, channel: str, payload: bytes, *, sharded: bool = False) -> int:
        # A recoverable channel's payload is logged as the producer gave it, without its envelope.
        envelope = parse_envelope(payload)
        self.log.setdefault(channel, []).append(payload if envelope is None else envelope.payload)
        return super().publish(channel, payload, sharded=sharded)


class TestBus:
    """A :class:`~eventbus.Runner` on an in-memory broker, as an async context manager."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, target: Any, **options: Any) -> None:
        self.broker = _RecordingBroker()
        options.setdefault("grace", 5.0)
        self._target, self._options = target, options
        self.runner = Runner(target, broker=self.broker, **options)
        self._down = False

    async def __aenter__(self) -> TestBus:
        await self.runner.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.runner.stop()

    @property
    def redis(self) -> Any:
        """The fakeredis client behind every handler's ``ctx.redis``."""
        return self.runner.redis

    @property
    def stats(self) -> BusStats:
        """The bus's counters, as the runner keeps them."""
        return self.runner.stats

    @property
    def state(self) -> dict[str, Any]:
        """The app's ``ctx.state`` dict, as startup hooks left it."""
        return self.runner.state

    def handler_stats(self, name: str) -> HandlerStats:
        """The counters of the handler named ``name`` (handled, failed, retried, ...)."""
        return self.runner.stats.handlers[name]

    async def publish(self, channel: str | Channel, data: Any) -> int:
        """Publish as a producer would; returns the number of receptions, like Redis.

        A recoverable :class:`~eventbus.Channel` keeps its history here as Redis would.
        """
        if self._down:  # between the two runs of bus.restart(): straight to the broker
            if isinstance(channel, Channel) and channel.recoverable:
                return await MemoryHistory(self.broker).publish(channel, encode_payload(data))
            sharded = isinstance(channel, Channel) and channel.sharded
            return self.broker.publish(channel_name(channel), encode_payload(data), sharded=sharded)
        assert self.runner.publisher is not None, "use TestBus as 'async with TestBus(...) as bus'"
        return await self.runner.publisher.publish(channel, data)

    @asynccontextmanager
    async def restart(self) -> AsyncIterator[None]:
        """Simulate a restart of the process: the runner stops cleanly (as on SIGTERM) on entering
        the block, and a new one starts on leaving it, on the same broker (keyspace, histories and
        resumed handlers' positions kept). What is published inside the block reaches no handler;
        a handler with ``resume=True`` gets it after the restart::

            async with bus.restart():
                await bus.publish(orders, {"id": 1})   # published while the process is down...
            await bus.drain()                           # ...and delivered to the resumed handlers

        ``bus.stats`` and ``bus.runner`` are the new run's afterwards.
        """
        await self.runner.stop()
        self._down = True
        try:
            yield
        finally:
            self._down = False
            self.runner = Runner(self._target, broker=self.broker, **self._options)
            await self.runner.start()

    @asynccontextmanager
    async def gap(self) -> AsyncIterator[None]:
        """Simulate a lost subscription connection: what is published inside the block does not
        reach the handlers; on leaving it the bus "reconnects", and recoverable channels read back
        what they missed, as they do after a reconnect to Redis::

            async with bus.gap():
                await bus.publish(orders, {"id": 1})   # missed...
            await bus.drain()                           # ...and recovered
        """
        subscribers = [s for s in (self.runner.subscriber, self.runner.sharded) if isinstance(s, MemorySubscriber)]
        for subscriber in subscribers:
            subscriber.disconnect()
        try:
            yield
        finally:
            for subscriber in subscribers:
                subscriber.reconnect()

    def lose_history(self, channel: str | Channel | None = None) -> None:
        """Forget a recoverable channel's history (all of them by default), as a Redis restart
        without persistence does: its next publish starts a new epoch, which subscribers report
        as a loss (the publisher knew the old one), gap or not."""
        self.broker.lose_history(None if channel is None else channel_name(channel))

    async def request(self, channel: str, data: Any, **options: Any) -> Any:
        """Send a request as a producer would and return the first reply (see :meth:`eventbus.Publisher.request`)."""
        assert self.runner.publisher is not None, "use TestBus as 'async with TestBus(...) as bus'"
        return await self.runner.publisher.request(channel, data, **options)

    async def request_all(self, channel: str, data: Any, **options: Any) -> list[Any]:
        """Send a request and gather the replies (see :meth:`eventbus.Publisher.request_all`)."""
        assert self.runner.publisher is not None, "use TestBus as 'async with TestBus(...) as bus'"
        return await self.runner.publisher.request_all(channel, data, **options)

    def published(self, channel: str | Channel, as_type: Any = bytes) -> list[Any]:
        """Every payload published to ``channel`` so far (by the test or by handlers), oldest first,
        decoded as ``as_type`` the way a handler annotated with it would receive it (bytes by
        default). A payload that does not decode raises :class:`~eventbus.PayloadError`."""
        decode = build_decoder(as_type, "TestBus.published").decode
        name = channel_name(channel)
        return [decode(Message(name, payload)) for payload in self.broker.log.get(name, [])]

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every handler has processed everything published so far."""
        if not await self.runner.drain(timeout):
            busy = [w.name for w in self.runner.workers if not w.idle]
            raise TimeoutError(f"handlers still busy after {timeout}s: {', '.join(busy)}")

    async def dead_letters(self) -> list[DeadLetter]:
        """What the handlers dead-lettered so far, oldest first."""
        store = self.runner.dead_letters
        assert store is not None, "use TestBus as 'async with TestBus(...) as bus'"
        return await store.list(count=10_000)
