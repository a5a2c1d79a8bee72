"""The runner: handler semantics (order, concurrency, failures, hooks) and its lifecycle (start,
stop, a failed start), on both backends (the in-memory one must behave like Redis) and on both event
loops (asyncio's own and uvloop). What each transport must deliver alike is in
tests/backends/test_conformance.py."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

import eventbus
from eventbus import ConfigError, Context, Message, Reject, Runner, on, on_shutdown, on_startup, on_stream
from eventbus._backends.autopipeline import AutoPipelineRedis
from eventbus._deadletter import DeadLetterStore
from eventbus._errors import ConnectError, SubscribeError
from tests.buses import publish, running, settle
from tests.conftest import ROOT
from tests.fault.helpers import eventually
from tests.redis_server import RedisServer, free_port

Start = Callable[..., AbstractAsyncContextManager[Runner]]

pytestmark = pytest.mark.both_loops


@pytest.fixture(params=["memory", "redis"])
def start(request: pytest.FixtureRequest) -> Start:
    """start(handlers, **options) runs them on the parametrized backend."""
    backend = request.param
    url = request.getfixturevalue("redis_server").url if backend == "redis" else None

    def factory(handlers: Any, **options: Any) -> AbstractAsyncContextManager[Runner]:
        return running(backend, handlers, url, **options)

    return factory


async def test_concurrency_one_keeps_publish_order(start: Start) -> None:
    seen: list[int] = []

    @on("seq")
    async def ordered(msg: Message, ctx: Context) -> None:
        await asyncio.sleep(0)  # suspend, so a second worker would interleave if there were one
        seen.append(int(msg.text))

    async with start([ordered]) as runner:
        for i in range(500):
            await publish(runner, "seq", i)
        await settle(runner)
    assert seen == list(range(500))


async def test_concurrency_n_runs_n_at_once(start: Start) -> None:
    active = 0
    peak = 0

    @on("work", concurrency=5)
    async def parallel(msg: Message, ctx: Context) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.02)
        active -= 1

    async with start([parallel]) as runner:
        for i in range(30):
            await publish(runner, "work", i)
        await settle(runner)
        assert runner.stats.handlers["parallel"].handled == 30
    assert peak == 5


async def test_a_slow_handler_does_not_delay_the_others(start: Start) -> None:
    release = asyncio.Event()
    fast_seen: list[bytes] = []

    @on("events")
    async def slow(msg: Message, ctx: Context) -> None:
        await release.wait()

    @on("events")
    async def fast(msg: Message, ctx: Context) -> None:
        fast_seen.append(msg.data)

    async with start([slow, fast]) as runner:
        for i in range(100):
            await publish(runner, "events", i)
        await eventually(lambda: len(fast_seen) == 100, what="the fast handler's messages")
        # while slow is still stuck on its first message
        assert runner.stats.handlers["slow"].handled == 0
        release.set()
        await settle(runner)
        assert runner.stats.handlers["slow"].handled == 100


@pytest.mark.parametrize(("policy", "kept"), [("drop_newest", [0, 1, 2, 3]), ("drop_oldest", [0, 7, 8, 9])])
async def test_full_inbox_policy_is_counted(start: Start, policy: str, kept: list[int]) -> None:
    release = asyncio.Event()
    seen: list[int] = []

    @on("burst", inbox_size=3, overflow=policy)
    async def limited(msg: Message, ctx: Context) -> None:
        seen.append(int(msg.text))
        await release.wait()

    async with start([limited]) as runner:
        await publish(runner, "burst", 0)
        await eventually(lambda: bool(seen), what="the first message in flight (out of the inbox)")
        for i in range(1, 10):
            await publish(runner, "burst", i)
        await eventually(lambda: runner.stats.handlers["limited"].received == 10, what="the burst")
        release.set()
        await settle(runner)
        stats = runner.stats.handlers["limited"]
        assert (stats.received, stats.handled, stats.dropped) == (10, 4, 6)
    assert seen == kept


async def test_handler_errors_are_counted_and_the_loop_goes_on(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    ok: list[int] = []

    @on("jobs")
    async def flaky(msg: Message, ctx: Context) -> None:
        if int(msg.text) % 2:
            raise RuntimeError(f"odd job {msg.text}")
        ok.append(int(msg.text))

    async with start([flaky]) as runner:
        for i in range(10):
            await publish(runner, "jobs", i)
        await settle(runner)
        stats = runner.stats.handlers["flaky"]
        assert (stats.handled, stats.failed, stats.dead_lettered) == (5, 5, 5)
        letters = await DeadLetterStore(runner.redis).list()
    assert ok == [0, 2, 4, 6, 8]
    assert [(d.handler, d.channel, d.payload, d.attempts) for d in letters] == [
        ("flaky", "jobs", str(i).encode(), 1) for i in (1, 3, 5, 7, 9)
    ]
    assert "RuntimeError: odd job 1" in letters[0].error
    failure_logs = [r for r in caplog.records if r.levelname == "ERROR" and "flaky" in r.getMessage()]
    assert failure_logs and failure_logs[0].exc_info is not None  # with a traceback


async def test_retries_then_success(start: Start) -> None:
    attempts: dict[str, int] = {}

    @on("retry", retries=3, backoff=0.001)
    async def eventually(msg: Message, ctx: Context) -> None:
        attempts[msg.text] = attempts.get(msg.text, 0) + 1
        if attempts[msg.text] < 3:
            raise ConnectionError("upstream busy")

    async with start([eventually]) as runner:
        await publish(runner, "retry", "a")
        await settle(runner)
        stats = runner.stats.handlers["eventually"]
        assert (stats.handled, stats.retried, stats.failed) == (1, 2, 0)
    assert attempts == {"a": 3}


async def test_reject_and_bad_payloads_are_dead_lettered_without_retry(start: Start) -> None:
    calls = 0

    @on("in", retries=5, backoff=0.001)
    async def strict(msg: Message, ctx: Context) -> None:
        nonlocal calls
        calls += 1
        if msg.json().get("bad"):
            raise Reject("bad order")

    async with start([strict]) as runner:
        await publish(runner, "in", {"bad": True})
        await publish(runner, "in", b"\xff not json")
        await publish(runner, "in", {"bad": False})
        await settle(runner)
        stats = runner.stats.handlers["strict"]
        assert (stats.handled, stats.rejected, stats.retried, stats.dead_lettered) == (1, 2, 0, 2)
        letters = await DeadLetterStore(runner.redis).list()
    assert calls == 3
    assert letters[0].error == "rejected: bad order"
    assert "not valid JSON" in letters[1].error
    assert letters[1].payload == b"\xff not json"


async def test_sync_handlers_run_in_a_worker_thread(start: Start) -> None:
    threads: list[int] = []

    @on("sync")
    def blocking(msg: Message, ctx: Context) -> None:
        threads.append(threading.get_ident())

    async with start([blocking]) as runner:
        await publish(runner, "sync", "x")
        await settle(runner)
    assert threads and threads[0] != threading.get_ident()


async def test_lifecycle_hooks_share_state_with_handlers(start: Start) -> None:
    events: list[str] = []

    @on_startup
    async def open_client(ctx: Context) -> None:
        ctx.state["client"] = "open"
        events.append("startup")

    @on("use")
    async def use(msg: Message, ctx: Context) -> None:
        events.append(f"handled with {ctx.state['client']}")
        await ctx.publish("used", msg.data)

    @on("used")
    async def downstream(msg: Message, ctx: Context) -> None:
        events.append(f"downstream {msg.text}")

    @on_shutdown
    async def close_client(ctx: Context) -> None:
        events.append("shutdown")

    async with start([open_client, use, downstream, close_client]) as runner:
        await publish(runner, "use", "42")
        await settle(runner)
    assert events == ["startup", "handled with open", "downstream 42", "shutdown"]


async def test_shutdown_finishes_queued_work_within_grace(start: Start) -> None:
    done: list[int] = []

    @on("q")
    async def steady(msg: Message, ctx: Context) -> None:
        await asyncio.sleep(0.005)
        done.append(int(msg.text))

    async with start([steady], grace=10) as runner:
        for i in range(50):
            await publish(runner, "q", i)
        # All arrived; most still queued when the stop begins.
        await eventually(lambda: runner.stats.handlers["steady"].received == 50, what="every message")
    assert done == list(range(50))
    assert runner.stats.handlers["steady"].abandoned == 0


async def test_shutdown_abandons_and_reports_after_grace(start: Start, caplog: pytest.LogCaptureFixture) -> None:
    @on("stuck")
    async def never(msg: Message, ctx: Context) -> None:
        await asyncio.sleep(3600)

    async with start([never], grace=0.2) as runner:
        for i in range(5):
            await publish(runner, "stuck", i)
        await eventually(lambda: runner.stats.handlers["never"].received == 5, what="every message")
    assert runner.stats.handlers["never"].abandoned == 5
    assert any("5 queued or in-flight message(s) abandoned" in r.getMessage() for r in caplog.records)


@pytest.fixture
async def unused() -> AsyncIterator[None]:
    yield None


def test_redis_server_fixture_is_private(redis_server: RedisServer) -> None:
    assert redis_server.port != 6379


async def test_ctx_stopping_tells_background_tasks_to_wind_down(start: Start) -> None:
    events: list[str] = []

    async def producer(ctx: Context) -> None:
        await ctx.stopping.wait()
        events.append("producer saw stopping")

    @on_startup
    async def begin(ctx: Context) -> None:
        assert not ctx.stopping.is_set()
        ctx.state["task"] = asyncio.create_task(producer(ctx))

    @on("x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    @on_shutdown
    async def end(ctx: Context) -> None:
        await ctx.state["task"]
        events.append("shutdown")

    async with start([begin, handler, end]):
        await asyncio.sleep(0.01)  # waits for something NOT to happen: the producer must not see stopping
        assert events == []
    assert events == ["producer saw stopping", "shutdown"]


@pytest.mark.parametrize("how", ["argument", "EVENTBUS_URL", "default", "embedded", "memory"])
async def test_ctx_server_says_where_redis_came_from(
    how: str, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Apps learn whether their URL was chosen on purpose, and whether the server is theirs."""
    from eventbus._backends.memory import MemoryBroker
    from tests.redis_server import free_port

    seen: list[Any] = []
    handled = asyncio.Event()

    @on_startup
    async def look(ctx: Context) -> None:
        seen.append(ctx.server)

    @on("x")
    async def handler(msg: Message, ctx: Context) -> None:
        seen.append(ctx.server)
        handled.set()

    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    options: dict[str, Any] = {}
    if how == "argument":
        options["url"] = redis_server.url
    elif how == "EVENTBUS_URL":
        monkeypatch.setenv("EVENTBUS_URL", redis_server.url)
    elif how == "default":
        monkeypatch.setenv("EVENTBUS_DEFAULT_URL", redis_server.url)
    elif how == "embedded":
        monkeypatch.setenv("EVENTBUS_DEFAULT_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody there
    else:
        options["broker"] = MemoryBroker()
    runner = Runner([look, handler], grace=1.0, **options)
    async with runner:
        await runner.publisher.publish("x", b"1")  # type: ignore[union-attr]
        await asyncio.wait_for(handled.wait(), 10)
    hook_view, handler_view = seen
    assert hook_view == handler_view == runner.server
    explicit, owned = {
        "argument": (True, False),
        "EVENTBUS_URL": (True, False),
        "default": (False, False),
        "embedded": (False, True),
        "memory": (False, True),
    }[how]
    assert (hook_view.explicit, hook_view.owned) == (explicit, owned)
    # The same names as the startup log line: "--url" or "code", "$EVENTBUS_URL", the default's
    # variable when it is set, "embedded", "memory".
    expected_source = {
        "EVENTBUS_URL": "$EVENTBUS_URL",
        "default": "$EVENTBUS_DEFAULT_URL",
        "embedded": "embedded",
        "memory": "memory",
    }
    if how in expected_source:
        assert hook_view.source == expected_source[how]


async def test_failing_shutdown_hook_still_closes_the_backend(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # A shutdown hook that raises must not skip closing the connections (nor an embedded Redis,
    # which _close_backend stops too), nor the other shutdown hooks.
    ran: list[str] = []

    @on("review:x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    @on_shutdown
    async def broken(ctx: Context) -> None:
        raise RuntimeError("hook failed")

    @on_shutdown
    async def second(ctx: Context) -> None:
        ran.append("second")

    runner = Runner([handler, broken, second], url=redis_server.url, grace=1.0)
    await runner.start()
    client = runner.redis
    await runner.stop()
    assert runner.redis is None, "the command client was left open"
    assert client is not None
    assert ran == ["second"]
    assert "hook failed" in caplog.text


def lifecycle_hooks(events: list[str]) -> list[Any]:
    @on_startup
    async def opened(ctx: Context) -> None:
        events.append("startup")

    @on_shutdown
    async def closed(ctx: Context) -> None:
        events.append(f"shutdown (stopping={ctx.stopping.is_set()})")

    return [opened, closed]


def leftover_tasks() -> list[str]:
    return [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("eventbus:")]


async def test_a_failed_start_leaves_no_subscription_nor_worker_running(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The pub/sub subscription is up when a stream consumer fails to start (its key is not a
    # stream): start() must undo it, not leave a connection and a reconnecting supervisor behind.
    events: list[str] = []

    @on("review:chan")
    async def plain(msg: Message, ctx: Context) -> None: ...

    @on_stream("review:not-a-stream", group="g")
    async def consumer(msg: Message, ctx: Context) -> None: ...

    with redis_server.client() as client:
        client.set("review:not-a-stream", "a string")
        runner = Runner([plain, consumer, *lifecycle_hooks(events)], url=redis_server.url, grace=1.0)
        with pytest.raises(Exception, match="WRONGTYPE"):
            await runner.start()
        assert leftover_tasks() == []
        assert runner.redis is None and runner.backend is None, "the backend was left open"
        # Every startup hook had run: the shutdown hooks are owed, and ctx.stopping is set for them.
        assert events == ["startup", "shutdown (stopping=True)"]
        # A failed start raises; it does not report a drain nor a summary as a stop does.
        assert "stopped:" not in caplog.text and "summary:" not in caplog.text
        await eventually(lambda: client.pubsub_numsub("review:chan") == [(b"review:chan", 0)])


async def test_a_subscription_refused_by_an_acl_undoes_the_start(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The pub/sub connection subscribes; the sharded one is refused (NOPERM) after it connected.
    events: list[str] = []

    @on("review:allowed")
    async def plain(msg: Message, ctx: Context) -> None: ...

    @on("review:forbidden", sharded=True)
    async def sharded(msg: Message, ctx: Context) -> None: ...

    with redis_server.client() as client:
        client.acl_setuser("limited", enabled=True, passwords=["+pw"], keys=["*"], channels=["review:allowed"])
        client.execute_command("ACL", "SETUSER", "limited", "+@all")
        try:
            url = f"redis://limited:pw@127.0.0.1:{redis_server.port}/0"
            runner = Runner([plain, sharded, *lifecycle_hooks(events)], url=url, grace=1.0)
            with pytest.raises(SubscribeError, match="review:forbidden"):
                await runner.start()
            assert leftover_tasks() == []
            assert runner.redis is None
            assert events == ["startup", "shutdown (stopping=True)"]
            await eventually(lambda: client.pubsub_numsub("review:allowed") == [(b"review:allowed", 0)])
            assert [c for c in client.client_list() if c["user"] == "limited"] == []
        finally:
            client.acl_deluser("limited")
    assert "undoing the failed start failed" not in caplog.text


async def test_a_stop_goes_back_in_order(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """Stop reading, finish queued work, report, close the sources (the last acknowledgements), run
    the shutdown hooks (ctx.redis still open), close the backend, then the summary line."""
    caplog.set_level(logging.INFO, logger="eventbus")
    release = asyncio.Event()
    seen: dict[str, Any] = {}

    @on("review:plain")
    async def plain(msg: Message, ctx: Context) -> None:
        await release.wait()

    @on_stream("review:stream", group="g")
    async def entries(msg: Message, ctx: Context) -> None:
        pass

    @on_shutdown
    async def look(ctx: Context) -> None:
        assert runner.subscriber is not None
        seen["reading"] = runner.subscriber.is_connected()
        seen["handled"] = runner.stats.handlers["plain"].handled
        seen["pending"] = (await ctx.redis.xpending("review:stream", "g"))["pending"]
        logging.getLogger("eventbus").info("shutdown hook ran")

    runner = Runner([plain, entries, look], url=redis_server.url, grace=5.0)
    async with runner:
        assert runner.publisher is not None
        await runner.publisher.append("review:stream", "e")
        for i in range(3):
            await runner.publisher.publish("review:plain", i)
        await eventually(lambda: runner.stats.handlers["entries"].handled == 1 and len(runner.workers[0].inbox) == 2)
        asyncio.get_running_loop().call_later(0.05, release.set)  # the queued work is still waiting
    assert seen == {"reading": False, "handled": 3, "pending": 0}
    assert runner.redis is None
    lines = [r.getMessage() for r in caplog.records if r.name == "eventbus"]
    order = [
        next(i for i, line in enumerate(lines) if line.startswith(prefix))
        for prefix in ("stopped: all queued work finished", "shutdown hook ran", "summary:")
    ]
    assert order == sorted(order)


@pytest.mark.parametrize("outcome", ["stopped", "failed to start"])
async def test_serve_puts_the_signal_handlers_back(outcome: str, redis_server: RedisServer) -> None:
    @on("review:x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    # (Not SIGINT: removing asyncio's handler for it puts Python's default back, not the test
    # runner's own, which is asyncio's doing.)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGHUP)}
    if outcome == "stopped":
        runner = Runner([handler], url=redis_server.url, grace=1.0)
        serving = asyncio.create_task(runner.serve())
        await asyncio.wait_for(runner.ready.wait(), 10)
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]  # installed while serving
        runner.request_stop()
        await asyncio.wait_for(serving, 10)
    else:
        runner = Runner([handler], url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.2, grace=1.0)
        with pytest.raises(ConnectError):
            await runner.serve()
    assert {sig: signal.getsignal(sig) for sig in before} == before


async def test_run_inside_a_running_loop_is_one_line_naming_the_runner(recwarn: pytest.WarningsRecorder) -> None:
    import eventbus

    @on("x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    with pytest.raises(RuntimeError) as caught:
        eventbus.run([handler])
    text = str(caught.value)
    assert "\n" not in text
    assert "inside a running event loop" in text and "async with Runner(...)" in text
    # Refused before a coroutine was made: no "coroutine ... was never awaited" warning follows.
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


def test_the_documented_asyncio_program_exits_0_on_ctrl_c(
    redis_server: RedisServer, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    """docs/guide.md's worker.py (asyncio.run(main()) around Runner.serve): SIGINT ends it with 0, no traceback."""
    from tests.cli_process import EventbusProcess
    from tests.test_readme import blocks

    files = {b.path: b.code for b in blocks(ROOT / "docs" / "guide.md") if b.path in ("service.py", "worker.py")}
    assert set(files) == {"service.py", "worker.py"}
    for name, code in files.items():
        (tmp_path / name).write_text(code)
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}:{ROOT}", "EVENTBUS_URL": redis_server.url}
    process = EventbusProcess(["worker.py"], env, command=[sys.executable], cwd=tmp_path)
    try:
        process.wait_for(r"subscribed to 1 channel")
        process.signal(signal.SIGINT)
        assert process.wait(30) == 0, process.output
    finally:
        process.kill()
    assert "SIGINT received: stopping" in process.output
    assert "stopped: all queued work finished" in process.output
    assert "Traceback" not in process.output and "KeyboardInterrupt" not in process.output


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis://u:s3cret@[::1/0", "unbalanced brackets in the host '[::1'"),
        ("redis://u:s3cret@127.0.0.1:6379/0?option=1", "unknown option 'option'"),
    ],
)
def test_a_malformed_url_from_code_is_a_config_error_before_anything_starts(url: str, named: str) -> None:
    @on("orders")
    async def orders(msg: Message, ctx: Context) -> None: ...

    for attempt in (lambda: Runner([orders], url=url), lambda: eventbus.connect(url)):
        with pytest.raises(ConfigError) as caught:
            attempt()
        assert named in str(caught.value) and "(from code)" in str(caught.value)
        assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(("autopipeline", "client_class"), [(None, AutoPipelineRedis), (False, aioredis.Redis)])
async def test_autopipeline_false_gives_handlers_a_plain_redis_client(
    autopipeline: bool | None, client_class: type, redis_server: RedisServer
) -> None:
    seen: list[type] = []

    @on("kinds")
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(type(ctx.redis))
        await ctx.redis.incr("kinds")

    async with running("redis", [record], redis_server.url, autopipeline=autopipeline) as runner:
        assert await publish(runner, "kinds", "1") == 1
        await settle(runner)
    assert seen == [client_class]


async def test_a_module_of_handlers_runs_end_to_end_on_the_plain_client(redis_server: RedisServer) -> None:
    with redis_server.client() as check:
        async with running("redis", "tests.sample_apps.orders", redis_server.url, autopipeline=False) as runner:
            assert type(runner.redis) is aioredis.Redis
            for order in range(20):
                await publish(runner, "purchase_orders", str(order))
            await publish(runner, "purchase_orders:Opening Ceremony", "7")
            await settle(runner)
            assert runner.state["opening"] == ["7"]
        assert check.get("orders_seen") == b"20"
        assert check.lrange("orders", 0, -1) == [str(order).encode() for order in range(20)]
        assert check.lrange("ceremony", 0, -1) == [b"purchase_orders:Opening Ceremony|purchase_orders:* Ceremony|7"]
        assert check.get("sample:started") == b"1" and check.get("sample:stopped") == b"1"


async def test_connect_without_autopipelining_gives_a_plain_client(redis_server: RedisServer) -> None:
    async with eventbus.connect(redis_server.url, autopipeline=False) as bus:
        assert type(bus.redis) is aioredis.Redis
        assert await bus.redis.set("k", "v")
    async with eventbus.connect(redis_server.url) as bus:
        assert type(bus.redis) is AutoPipelineRedis
        assert await bus.redis.get("k") == b"v"
