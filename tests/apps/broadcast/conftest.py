"""Fixtures for the broadcast service tests: a fake Twilio over HTTP and the service on eventbus."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from broadcast_fake_twilio import FakeTwilio
from broadcast_support import ACCOUNT_SID, AUTH_TOKEN, Service, run_service


@pytest.fixture
async def fake_twilio() -> AsyncIterator[FakeTwilio]:
    fake = await FakeTwilio(ACCOUNT_SID, AUTH_TOKEN).start()
    yield fake
    await fake.stop()


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch, fake_twilio: FakeTwilio) -> Iterator[dict[str, str]]:
    """Settings for fast tests: the fake server, short timeouts and backoff; no pacing (the default)."""
    env = {
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_BASE_URL": fake_twilio.url,
        "BROADCAST_CONCURRENCY": "10",
        "BROADCAST_MAX_ATTEMPTS": "4",
        "BROADCAST_RETRY_BASE": "0.01",
        "BROADCAST_RETRY_CAP": "0.05",
        "BROADCAST_QUEUE_FULL_ATTEMPTS": "3",
        "BROADCAST_QUEUE_FULL_RETRY_BASE": "0.02",
        "BROADCAST_QUEUE_FULL_RETRY_CAP": "0.05",
        "BROADCAST_CONNECT_TIMEOUT": "1",
        "BROADCAST_READ_TIMEOUT": "0.5",
    }
    for name in ("BROADCAST_DRY_RUN", "BROADCAST_RATE_PER_SENDER", "BROADCAST_BURST"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    yield env


@pytest.fixture
async def service(twilio_env: dict[str, str], redis_server: Any) -> AsyncIterator[Service]:
    async with run_service(redis_server.url) as svc:
        yield svc


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Capture every logger at DEBUG, including twilio's, aiohttp's and eventbus's."""
    caplog.set_level(logging.DEBUG)
    return caplog
