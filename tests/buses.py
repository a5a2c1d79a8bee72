"""Run a set of handlers on either backend, so one conformance suite checks both."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from eventbus import Runner
from eventbus._backends.memory import MemoryBroker


@asynccontextmanager
async def running(backend: str, handlers: Any, url: str | None = None, **options: Any) -> AsyncIterator[Runner]:
    options.setdefault("grace", 5.0)
    if backend == "memory":
        runner = Runner(handlers, broker=MemoryBroker(), **options)
    else:
        assert url is not None
        runner = Runner(handlers, url=url, **options)
    async with runner:
        yield runner


async def publish(runner: Runner, channel: str, data: Any) -> int:
    assert runner.publisher is not None
    return await runner.publisher.publish(channel, data)
