"""Shared pieces of the fault and bad-input suites: a fast-reacting runner, waiting, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from eventbus import Runner

# Short deadlines so that a half-open connection is noticed in about a second, not ten.
FAST = {
    "ping_interval": 0.2,
    "ping_timeout": 0.5,
    "reconnect_max_delay": 0.3,
    "grace": 5.0,
    "connect_timeout": 5.0,
    "embedded": False,
}


@asynccontextmanager
async def running(handlers: Any, url: str, **options: Any) -> AsyncIterator[Runner]:
    async with Runner(handlers, url=url, **{**FAST, **options}) as runner:
        yield runner


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]], timeout: float = 20.0, what: str = "condition"
) -> None:
    """Wait until ``predicate()`` holds (it may be a coroutine function); the timeout only guards
    against hangs."""
    deadline = time.monotonic() + timeout
    while not await _holds(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def _holds(predicate: Callable[[], bool | Awaitable[bool]]) -> bool:
    result = predicate()
    return bool(await result) if inspect.isawaitable(result) else bool(result)


async def publish_all(runner: Runner, channel: str, payloads: list[Any]) -> None:
    assert runner.publisher is not None
    for payload in payloads:
        await runner.publisher.publish(channel, payload)


async def wait_reconnected(runner: Runner, count: int = 1) -> None:
    await eventually(lambda: runner.stats.reconnects >= count, what=f"{count} reconnect(s)")


class Proxy:
    """A loopback TCP proxy to a Redis server that can silently swallow all traffic.

    ``blackhole = True`` models a half-open path (a dead NAT entry, a partitioned network): both
    sockets stay open, nothing is refused, nothing arrives. New connections are accepted and
    swallowed too, as a SYN-accepting middlebox would. A connection that lost bytes that way stays
    dead after the blackhole ends, as TCP would (it never delivers a stream with a hole in it):
    only new connections get through again.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.blackhole = False
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> Proxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers.add(up_writer)
        holed: list[bool] = [False]  # this connection lost bytes to the blackhole: dead for good
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst, holed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, holed: list[bool]) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                if self.blackhole:
                    holed[0] = True
                if not holed[0]:
                    dst.write(data)
                    await dst.drain()
        dst.close()
