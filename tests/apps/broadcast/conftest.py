"""Fixtures for the broadcast service tests: a fake Twilio over HTTP and the service on eventbus."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from broadcast_fake_twilio import FakeTwilio

import eventbus
from eventbus import DeadLetter, DeadLetterStore

# Test-only credentials, random per run: the log checks look for them.
ACCOUNT_SID = "AC" + secrets.token_hex(16)
AUTH_TOKEN = secrets.token_hex(16)


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = await FakeTwilio(ACCOUNT_SID, AUTH_TOKEN).start()
    yield fake
    await fake.stop()


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch, fake_twilio: FakeTwilio) -> Iterator[dict[str, str]]:
    """Settings for fast tests: the fake server, short timeouts and backoff, a high rate limit."""
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_BASE_URL": fake_twilio.url,
        "BROADCAST_CONCURRENCY": "10",
        "BROADCAST_RATE_PER_SENDER": "1000",
        "BROADCAST_MAX_ATTEMPTS": "4",
        "BROADCAST_RETRY_BASE": "0.01",
        "BROADCAST_RETRY_CAP": "0.05",
        "BROADCAST_CONNECT_TIMEOUT": "1",
        "BROADCAST_READ_TIMEOUT": "0.5",
    }
    monkeypatch.delenv("BROADCAST_DRY_RUN", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


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


@pytest.fixture
async def service(twilio_env: dict[str, str], redis_server: Any) -> AsyncIterator[Service]:
    async with run_service(redis_server.url) as svc:
        yield svc


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG, including twilio's, aiohttp's and eventbus's."""
    caplog.set_level(logging.DEBUG)
    return caplog
