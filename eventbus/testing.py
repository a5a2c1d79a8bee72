"""Test helpers for users' handler modules: run them in memory, publish, wait, inspect.

    from eventbus.testing import TestBus

    async def test_counts_orders():
        async with TestBus("myapp.handlers") as bus:
            await bus.publish("purchase_orders", "42")
            await bus.drain()
            assert await bus.redis.get("orders_seen") == b"1"

The bus follows Redis semantics (channel vs pattern delivery, Redis's glob rules, PUBLISH's
receiver count), and ``bus.redis`` is a fakeredis client that the handlers' ``ctx.redis`` shares.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from eventbus.backends.memory import MemoryBroker
from eventbus.deadletter import DeadLetter, DeadLetterStore
from eventbus.runner import Runner
from eventbus.stats import BusStats, HandlerStats

__all__ = ["TestBus"]


class TestBus:
    """A :class:`~eventbus.Runner` on an in-memory broker, as an async context manager."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, target: Any, **options: Any) -> None:
        self.broker = MemoryBroker()
        options.setdefault("grace", 5.0)
        self.runner = Runner(target, broker=self.broker, **options)

    async def __aenter__(self) -> TestBus:
        await self.runner.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.runner.stop()

    @property
    def redis(self) -> Any:
        return self.runner.redis

    @property
    def stats(self) -> BusStats:
        return self.runner.stats

    @property
    def state(self) -> dict[str, Any]:
        return self.runner.state

    def handler_stats(self, name: str) -> HandlerStats:
        return self.runner.stats.handlers[name]

    async def publish(self, channel: str, data: Any) -> int:
        """Publish as a producer would; returns the number of receptions, like Redis."""
        assert self.runner.publisher is not None, "use TestBus as 'async with TestBus(...) as bus'"
        return await self.runner.publisher.publish(channel, data)

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every handler has processed everything published so far."""
        if not await self.runner.drain(timeout):
            busy = [w.name for w in self.runner.workers if not w.idle]
            raise TimeoutError(f"handlers still busy after {timeout}s: {', '.join(busy)}")

    async def dead_letters(self) -> list[DeadLetter]:
        return await DeadLetterStore(self.redis, self.runner.dead_letter_stream).list(count=10_000)
