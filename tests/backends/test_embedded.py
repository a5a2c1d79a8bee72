from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from eventbus import Context, Message, Runner, on
from eventbus._backends.embedded import EmbeddedRedis
from tests.cli_process import EventbusProcess, children, gone, hangups_reach_children, needs_proc, wait_until
from tests.redis_server import free_port, port_open


@pytest.mark.parametrize("kind", ["redis-server", "fakeredis"])
async def test_embedded_server_runs_handlers_and_stops(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "fakeredis":
        # A machine without the redis-server binary falls back to fakeredis's TCP server.
        monkeypatch.setattr("eventbus._backends.embedded.shutil.which", lambda name: None)
    embedded = EmbeddedRedis().start()
    assert embedded.kind == kind
    got: list[bytes] = []

    @on("ping")
    async def record(msg: Message, ctx: Context) -> None:
        got.append(msg.data)
        await ctx.redis.incr("n")

    try:
        async with Runner([record], url=embedded.url) as runner:
            assert await runner.publisher.publish("ping", "1") == 1  # type: ignore[union-attr]
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.01)
            assert await runner.drain(5)
            assert await runner.redis.get("n") == b"1"
    finally:
        embedded.stop()
    assert got == [b"1"]
    assert not port_open(embedded.port)  # stopped with the run


async def test_runner_falls_back_to_embedded_when_default_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.redis_server import free_port

    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    monkeypatch.setenv("EVENTBUS_DEFAULT_URL", f"redis://127.0.0.1:{free_port()}/0")

    @on("x")
    async def noop(msg: Message, ctx: Context) -> None: ...

    runner = Runner([noop])
    async with runner:
        assert runner.embedded is not None
        embedded = runner.embedded
        assert runner.url == embedded.url
    assert runner.embedded is None
    assert not port_open(embedded.port)  # stopped with the run


async def test_no_embedded_means_a_bounded_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus import ConnectError
    from tests.redis_server import free_port

    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    monkeypatch.setenv("EVENTBUS_DEFAULT_URL", f"redis://127.0.0.1:{free_port()}/0")

    @on("x")
    async def noop(msg: Message, ctx: Context) -> None: ...

    with pytest.raises(ConnectError, match="did not answer within"):
        async with Runner([noop], embedded=False, connect_timeout=0.5):
            pass


needs_redis_server = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")


@pytest.fixture
def run_with_embedded(subprocess_env: dict[str, str]) -> Iterator[tuple[EventbusProcess, int]]:
    """``run`` with nothing configured and nothing answering at the default URL; its redis-server pid."""
    env = {**subprocess_env, "EVENTBUS_DEFAULT_URL": f"redis://127.0.0.1:{free_port()}/0"}
    proc = EventbusProcess(["run", "tests.sample_apps.slow"], env)
    servers: list[int] = []
    try:
        proc.wait_for("started an embedded redis-server at")
        proc.wait_for("subscribed to")
        servers = children(proc.process.pid, "redis-server")
        assert len(servers) == 1, proc.output
        yield proc, servers[0]
    finally:
        proc.kill()
        for server in servers:
            if not gone(server):
                os.kill(server, signal.SIGKILL)  # not left behind when a test failed


@needs_proc
@needs_redis_server
def test_the_embedded_server_dies_with_a_sigkilled_runner(run_with_embedded: tuple[EventbusProcess, int]) -> None:
    proc, server = run_with_embedded
    proc.signal(signal.SIGKILL)  # no cleanup runs in the runner
    assert proc.wait() == -signal.SIGKILL
    assert wait_until(lambda: gone(server), timeout=5), f"redis-server {server} outlived its runner"


@hangups_reach_children
@needs_proc
@needs_redis_server
def test_sighup_stops_the_runner_and_its_embedded_server(run_with_embedded: tuple[EventbusProcess, int]) -> None:
    proc, server = run_with_embedded
    url = re.search(r"embedded redis-server at (redis://\S+)", proc.output).group(1)  # type: ignore[union-attr]
    with redis.Redis.from_url(url) as client:
        client.publish("slow", "1")
    proc.wait_for("slow handler started on 1")
    proc.signal(signal.SIGHUP)
    assert proc.wait() == 0, proc.output
    assert "all queued work finished" in proc.output and "shutdown hook ran" in proc.output
    assert "handled=2" in proc.output  # the summary: the message in progress was finished (and its receipt)
    assert wait_until(lambda: gone(server), timeout=5)


@needs_proc
@needs_redis_server
async def test_the_embedded_server_outlives_the_thread_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Linux a child is signalled when the *thread* that started it exits: not a pool thread."""
    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    monkeypatch.setenv("EVENTBUS_DEFAULT_URL", f"redis://127.0.0.1:{free_port()}/0")
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor()
    loop.set_default_executor(pool)

    @on("x")
    async def noop(msg: Message, ctx: Context) -> None: ...

    async with Runner([noop]) as runner:
        server = runner.embedded._process.pid
        pool.shutdown(wait=True)  # every thread the start used for blocking work has exited
        loop.set_default_executor(ThreadPoolExecutor())
        await asyncio.sleep(0.2)  # a death signal, had one been sent, is delivered by now
        assert not gone(server)
        assert await runner.redis.ping()
    assert wait_until(lambda: gone(server), timeout=5)
