"""Any asyncio event loop: choosing one (``--loop``, ``eventbus.run(loop=)``), and eventbus inside
a loop that is already running, uvloop included, against real redis-server processes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
import redis

import eventbus
from eventbus import Context, Message, Runner, on
from eventbus._cli import main
from eventbus._errors import ConfigError
from eventbus._loops import describe_loop, loop_factory
from eventbus._loops import run as run_on_loop
from eventbus.testing import TestBus
from tests.cli_process import ROOT, EventbusProcess
from tests.fault.helpers import eventually, publish_all
from tests.loops import HAS_UVLOOP, needs_uvloop
from tests.redis_server import RedisServer

DEFAULT_LOOP = "uvloop" if HAS_UVLOOP else "asyncio"


@pytest.fixture
def without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``import uvloop`` fails, as on a machine without it."""
    monkeypatch.setitem(sys.modules, "uvloop", None)


@pytest.fixture
def processes() -> Iterator[list[EventbusProcess]]:
    started: list[EventbusProcess] = []
    yield started
    for process in started:
        process.kill()


# -- choosing a loop --------------------------------------------------------------------------


@needs_uvloop
def test_auto_is_uvloop_when_installed() -> None:
    import uvloop

    assert loop_factory("auto") is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop


def test_auto_falls_back_to_asyncio_without_uvloop(without_uvloop: None) -> None:
    loop = loop_factory("auto")()
    try:
        assert type(loop).__module__.startswith("asyncio.")
        assert describe_loop(loop).startswith("asyncio (")
    finally:
        loop.close()


@needs_uvloop
def test_asyncio_means_the_stdlib_loop_even_after_uvloop_install() -> None:
    import uvloop

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())  # what uvloop.install() does
    try:
        loop = loop_factory("asyncio")()
        try:
            assert type(loop).__module__.startswith("asyncio.")
        finally:
            loop.close()
        assert run_on_loop(_loop_name(), "asyncio").startswith("asyncio (")
    finally:
        asyncio.set_event_loop_policy(None)


async def _loop_name() -> str:
    return describe_loop()


def test_uvloop_asked_for_but_missing_is_a_config_error(without_uvloop: None) -> None:
    with pytest.raises(ConfigError, match=r"uvloop is not installed: pip install 'eventbus\[uvloop\]'"):
        loop_factory("uvloop")
    coroutine = _loop_name()
    with pytest.raises(ConfigError, match="uvloop is not installed"):
        run_on_loop(coroutine, "uvloop")
    assert coroutine.cr_frame is None  # closed, not left to warn "never awaited"


def test_unknown_loop_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown event loop 'trio': choose one of auto, asyncio, uvloop"):
        loop_factory("trio")


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "tests.sample_apps.orders", "--loop", "uvloop"],
        ["run", "tests.sample_apps.orders", "--loop", "uvloop", "--workers", "2"],
        ["publish", "orders", "1", "--loop", "uvloop"],
        ["dead-letters", "list", "--loop", "uvloop"],
    ],
)
def test_cli_loop_uvloop_without_uvloop_is_one_line_and_exit_2(
    argv: list[str], without_uvloop: None, capsys: pytest.CaptureFixture[str]
) -> None:
    # Checked before anything starts: no connection attempt, no worker processes.
    assert main([*argv, "--url", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert err == "eventbus: error: event loop 'uvloop' was asked for but uvloop is not installed: " + (
        "pip install 'eventbus[uvloop]'\n"
    )


def test_cli_rejects_an_unknown_loop(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "tests.sample_apps.orders", "--loop", "trio"])
    assert exited.value.code == 2
    assert "invalid choice: 'trio'" in capsys.readouterr().err


@pytest.mark.both_loops
async def test_each_both_loops_test_runs_on_its_loop(request: pytest.FixtureRequest) -> None:
    # The conftest hook's contract, checked: the [uvloop] variant really runs on uvloop.
    on_uvloop = type(asyncio.get_running_loop()).__module__.startswith("uvloop")
    assert on_uvloop == ("[uvloop" in request.node.name)
    assert describe_loop().startswith("uvloop " if on_uvloop else "asyncio (")


# -- the CLI on each loop, against a real server ----------------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--loop", "asyncio"], "asyncio"),
        pytest.param(["--loop", "uvloop"], "uvloop", marks=needs_uvloop),
        ([], DEFAULT_LOOP),  # auto
    ],
    ids=["asyncio", "uvloop", "auto"],
)
def test_run_on_each_loop_handles_messages_and_stops_on_sigint(
    option: list[str],
    expected: str,
    redis_server: RedisServer,
    sync_redis: redis.Redis,
    subprocess_env: dict[str, str],
    processes: list[EventbusProcess],
) -> None:
    proc = EventbusProcess(
        ["run", "tests.sample_apps.orders", "--url", redis_server.url, "--stats-interval", "0", *option],
        subprocess_env,
    )
    processes.append(proc)
    proc.wait_for(rf"subscribed to 2 channel\(s\) .* \(event loop: {expected}[ )]")
    for i in range(20):
        sync_redis.publish("purchase_orders", str(i))
    _wait_until(lambda: sync_redis.llen("orders") == 20, "20 orders handled")
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0, proc.output
    assert sync_redis.lrange("orders", 0, -1) == [str(i).encode() for i in range(20)]
    assert "all queued work finished" in proc.output
    assert "Traceback" not in proc.output


@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_publish_on_each_loop(
    loop: str, redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    pubsub = sync_redis.pubsub()
    pubsub.subscribe("orders")
    assert pubsub.get_message(timeout=5) is not None  # the subscribe confirmation
    published = _eventbus(["publish", "orders", "42", "--url", redis_server.url, "--loop", loop], subprocess_env)
    assert published.returncode == 0, published.stderr
    assert "published 1 message(s) to 'orders': 1 reception(s)" in published.stdout
    message = pubsub.get_message(timeout=5)
    assert message is not None and message["data"] == b"42"
    pubsub.close()


# -- the programmatic entry points inside a running loop --------------------------------------


@pytest.mark.both_loops
async def test_runner_connect_and_testbus_inside_the_running_loop(redis_server: RedisServer) -> None:
    seen: list[str] = []

    @on("orders")
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)
        await ctx.redis.incr("seen")

    async with Runner([record], url=redis_server.url, grace=5.0) as runner, eventbus.connect(redis_server.url) as bus:
        for i in range(10):
            assert await bus.publish("orders", str(i)) == 1
        await eventually(lambda: len(seen) == 10, what="10 messages handled")
        assert await runner.drain(10)
        assert await bus.redis.get("seen") == b"10"
    assert seen == [str(i) for i in range(10)]

    async with TestBus([record]) as test_bus:
        assert await test_bus.publish("orders", "x") == 1
        await test_bus.drain()
    assert seen[-1] == "x"


@pytest.mark.both_loops
async def test_subscription_transport_pauses_and_resumes_reading(redis_server: RedisServer) -> None:
    # Backpressure (overflow="pause") stops reading the socket through the transport: each loop's
    # transport must do it, uvloop's included (they are not asyncio.Transport subclasses).
    seen: list[str] = []

    @on("orders")
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)

    async with Runner([record], url=redis_server.url, grace=5.0) as runner:
        protocol = runner.subscriber._protocol
        assert protocol is not None and protocol.transport is not None
        protocol.transport.pause_reading()
        before = protocol.bytes_received
        await publish_all(runner, "orders", [str(i) for i in range(10)])
        await asyncio.sleep(0.2)  # were the socket read, the messages would arrive meanwhile
        assert protocol.bytes_received == before and seen == []
        protocol.transport.resume_reading()
        await eventually(lambda: len(seen) == 10, what="the messages held while paused")
    assert seen == [str(i) for i in range(10)]


SCRIPT_UVLOOP_INSTALL = """
import asyncio, logging, sys, uvloop
from eventbus import Runner
logging.basicConfig(level="INFO", stream=sys.stdout)
uvloop.install()  # as an app served by uvicorn with uvloop has done
asyncio.run(Runner("tests.sample_apps.orders", url=sys.argv[1], grace=5.0).serve())
"""

SCRIPT_EVENTBUS_RUN = """
import logging, sys, eventbus
logging.basicConfig(level="INFO", stream=sys.stdout)
eventbus.run("tests.sample_apps.orders", url=sys.argv[1], grace=5.0, loop="uvloop")
"""


@needs_uvloop
@pytest.mark.parametrize("script", [SCRIPT_UVLOOP_INSTALL, SCRIPT_EVENTBUS_RUN], ids=["uvloop.install", "eventbus.run"])
def test_serve_under_uvloop_from_a_script(
    script: str,
    redis_server: RedisServer,
    sync_redis: redis.Redis,
    subprocess_env: dict[str, str],
    processes: list[EventbusProcess],
) -> None:
    proc = EventbusProcess([redis_server.url], subprocess_env, command=[sys.executable, "-c", script])
    processes.append(proc)
    proc.wait_for(r"subscribed to 2 channel\(s\) .* \(event loop: uvloop ")
    sync_redis.publish("purchase_orders", "7")
    _wait_until(lambda: sync_redis.llen("orders") == 1, "the order handled")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output
    assert sync_redis.get("sample:stopped") == b"1"  # shutdown hooks ran: a graceful stop
    assert "Traceback" not in proc.output


# -- helpers ----------------------------------------------------------------------------------


def _eventbus(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)
