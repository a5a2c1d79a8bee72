"""Helpers shared by the broadcast tests (imported by module name: no package, no conftest import)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import eventbus
from eventbus import DeadLetter, DeadLetterStore

# Test-only credentials, random per run: the log checks look for them.
ACCOUNT_SID = "AC" + secrets.token_hex(16)
AUTH_TOKEN = secrets.token_hex(16)


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.01)


class Service:
    """The broadcast app running under eventbus.Runner against a private redis-server."""

    def __init__(self, runner: eventbus.Runner, bus: Any) -> None:
        self.runner = runner
        self.bus = bus  # a producer's connection, as another service would have

    async def publish(self, channel: str, data: Any) -> int:
        return int(await self.bus.publish(channel, data))

    async def dead_letters(self) -> list[DeadLetter]:
        return await DeadLetterStore(self.bus.redis).list(count=10_000)

    async def wait_dead_letters(self, n: int, timeout: float = 10.0) -> list[DeadLetter]:
        async def enough() -> bool:
            return len(await self.dead_letters()) >= n

        await wait_until(enough, timeout)
        return await self.dead_letters()


@asynccontextmanager
async def run_service(url: str) -> AsyncIterator[Service]:
    runner = eventbus.Runner("apps.broadcast", url=url, grace=5.0)
    await runner.start()
    try:
        async with eventbus.connect(url=url) as bus:
            yield Service(runner, bus)
            await runner.drain(10)
    finally:
        await runner.stop()
