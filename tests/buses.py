"""Run a set of handlers on either backend, so one conformance suite checks both."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
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


async def settle(runner: Runner) -> None:
    """Until every message published so far has arrived and been handled, including those the
    handlers publish meanwhile: a PING answered on the subscription connection comes after every
    message Redis sent it before (the memory broker delivers as it publishes); then the handlers
    drain; again until a round trip after a drain brings nothing new."""
    await _round_trip(runner)
    assert await runner.drain(10)
    while True:
        seen = runner.stats.messages
        await _round_trip(runner)
        if runner.stats.messages == seen:
            return
        assert await runner.drain(10)


async def _round_trip(runner: Runner) -> None:
    protocol = getattr(runner.subscriber, "_protocol", None)  # None: in memory, nothing is in flight
    if protocol is not None:
        await asyncio.wait_for(protocol.send("PING"), 10)


async def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Until ``condition()`` holds, looking again every few milliseconds; generous: the machine is shared."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)
