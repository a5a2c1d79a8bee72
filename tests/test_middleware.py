"""Middleware chains: order, short-circuit, changing the message, failures, and no wrapper when unused."""

from __future__ import annotations

import subprocess
import sys
import types
from typing import Any

import pytest

from eventbus import ConfigError, Context, LoadError, Message, Router, Runner, on
from eventbus._deadletter import DeadLetterStore
from eventbus._stats import HandlerStats
from eventbus._worker import HandlerWorker
from eventbus.middleware import Invoke, compose, load_middleware
from tests.buses import settle
from tests.redis_server import RedisServer

Calls = list[str]


def recorder(name: str, calls: Calls) -> Any:
    async def record(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        calls.append(f"{name}>")
        try:
            return await call_next(msg, ctx)
        finally:
            calls.append(f"<{name}")

    return record


async def test_order_is_global_then_module_then_handler_first_listed_outermost(redis_server: RedisServer) -> None:
    calls: Calls = []

    @on("orders", middleware=[recorder("h1", calls), recorder("h2", calls)])
    async def handle(msg: Message, ctx: Context) -> None:
        calls.append("handler")

    module = types.ModuleType("shop")
    module.handle = handle  # type: ignore[attr-defined]
    module.middleware = [recorder("m1", calls), recorder("m2", calls)]  # type: ignore[attr-defined]
    runner = Runner(module, url=redis_server.url, middleware=[recorder("g1", calls), recorder("g2", calls)])
    async with runner:
        assert runner.publisher is not None
        await runner.publisher.publish("orders", "1")
        await settle(runner)
    assert calls == ["g1>", "g2>", "m1>", "m2>", "h1>", "h2>", "handler", "<h2", "<h1", "<m2", "<m1", "<g2", "<g1"]


async def test_short_circuit_and_a_changed_message(redis_server: RedisServer) -> None:
    seen: list[str] = []

    async def drop_tests(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        if msg.text.startswith("test:"):
            return None  # short-circuit: the handler never sees it
        return await call_next(Message(msg.channel, msg.data.upper(), msg.pattern), ctx)

    @on("words", middleware=[drop_tests])
    async def handle(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)

    async with Runner([handle], url=redis_server.url) as runner:
        assert runner.publisher is not None
        for word in ("test:skip", "hello"):
            await runner.publisher.publish("words", word)
        await settle(runner)
        stats = runner.stats.handlers["handle"]
        assert (stats.handled, stats.failed) == (2, 0)  # a skipped message counts as handled
    assert seen == ["HELLO"]


async def test_a_middleware_sees_the_result_and_the_exception(redis_server: RedisServer) -> None:
    outcomes: list[Any] = []

    async def observe(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        try:
            result = await call_next(msg, ctx)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
            raise
        outcomes.append(result)
        return result

    @on("n", middleware=[observe])
    async def half(msg: Message, ctx: Context) -> int:
        return 10 // int(msg.text)

    async with Runner([half], url=redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish("n", "2")
        await runner.publisher.publish("n", "0")
        await settle(runner)
    assert outcomes == [5, "ZeroDivisionError"]


async def test_a_raising_middleware_is_a_handler_failure_retried_then_dead_lettered(redis_server: RedisServer) -> None:
    attempts = 0

    async def broken(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        nonlocal attempts
        attempts += 1
        if msg.text == "bad":
            raise RuntimeError("middleware broke")
        return await call_next(msg, ctx)

    handled: list[str] = []

    @on("m", retries=2, backoff=0.001, middleware=[broken])
    async def handle(msg: Message, ctx: Context) -> None:
        handled.append(msg.text)

    async with Runner([handle], url=redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish("m", "bad")
        await runner.publisher.publish("m", "good")  # the loop goes on
        await settle(runner)
        stats = runner.stats.handlers["handle"]
        assert (stats.handled, stats.retried, stats.failed, stats.dead_lettered) == (1, 2, 1, 1)
        letters = await DeadLetterStore(runner.redis).list()
    assert attempts == 4
    assert handled == ["good"]
    assert letters[0].error == "RuntimeError: middleware broke"


async def test_sync_handlers_get_middleware_too(redis_server: RedisServer) -> None:
    calls: Calls = []

    @on("s", middleware=[recorder("mw", calls)])
    def blocking(msg: Message, ctx: Context) -> None:
        calls.append("handler")

    async with Runner([blocking], url=redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish("s", "x")
        await settle(runner)
    assert calls == ["mw>", "handler", "<mw"]


def test_no_middleware_means_no_wrapper() -> None:
    async def handle(msg: Message, ctx: Context) -> None:
        pass

    assert compose(handle, ()) is handle
    router = Router([on("c")(handle)])
    worker = HandlerWorker(router.handlers[0], None, HandlerStats(), None)  # type: ignore[arg-type]
    assert worker._invoke is handle


def test_router_option_and_include_keep_each_routers_middleware() -> None:
    calls: Calls = []
    inner_mw, outer_mw = recorder("inner", calls), recorder("outer", calls)

    @on("a")
    async def a(msg: Message, ctx: Context) -> None:
        pass

    inner = Router([a], middleware=[inner_mw])
    outer = Router(middleware=[outer_mw])
    outer.include(inner)
    assert outer.handlers[0].middleware == (outer_mw, inner_mw)


def test_a_module_named_middleware_is_not_taken_for_a_list() -> None:
    import eventbus.middleware

    @on("a")
    async def a(msg: Message, ctx: Context) -> None:
        pass

    module = types.ModuleType("app")
    module.a = a  # type: ignore[attr-defined]
    module.middleware = eventbus.middleware  # type: ignore[attr-defined]  # from eventbus import middleware
    assert Router.from_module(module).handlers[0].middleware == ()
    module.middleware = "timing"  # type: ignore[attr-defined]
    with pytest.raises(LoadError, match="router 'app': middleware must be a list"):
        Router.from_module(module)


def test_stacked_decorators_may_repeat_the_same_middleware() -> None:
    mw = recorder("x", [])

    @on("a", middleware=[mw])
    @on("b", middleware=[mw])
    async def both(msg: Message, ctx: Context) -> None:
        pass

    assert Router([both]).handlers[0].middleware == (mw,)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("not a list", "must be a list"),
        ([print], "is not a middleware"),
        ([lambda msg, ctx, call_next: None], "is not a middleware"),  # not async
    ],
)
def test_bad_middleware_fails_at_load_with_one_line(bad: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        on("c", middleware=bad)


def test_naming_a_factory_instead_of_calling_it_says_so() -> None:
    from eventbus.middlewares import timeout

    with pytest.raises(ConfigError, match=r"must be called: timeout\(5\)"):
        on("c", middleware=[timeout])

    @on("c")
    async def handler(msg: Message, ctx: Context) -> None: ...

    with pytest.raises(ConfigError, match="is not a middleware"):
        Runner([handler], middleware=[timeout])


def test_load_middleware_from_the_command_line_spelling() -> None:
    mw = load_middleware("eventbus.middlewares.timeout:timeout(2.5)")
    assert "timeout(2.5)" in mw.__qualname__
    with pytest.raises(LoadError, match="expected 'package\\.module:function'"):
        load_middleware("eventbus.middlewares.timeout")
    with pytest.raises(LoadError, match="does not define 'nope'"):
        load_middleware("eventbus.middlewares.timeout:nope")
    with pytest.raises(LoadError, match="not found"):
        load_middleware("no_such_pkg.mod:fn")
    with pytest.raises(LoadError, match="needs a number of seconds"):
        load_middleware("eventbus.middlewares.timeout:timeout(-1)")
    with pytest.raises(LoadError, match="Python literals"):
        load_middleware("eventbus.middlewares.timeout:timeout(x)")


def test_cli_run_with_a_bad_middleware_exits_2_with_one_line(subprocess_env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventbus", "run", "sample_apps.orders", "--middleware", "eventbus.middlewares:timeout"],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "is not a middleware" in result.stderr


def test_routes_shows_each_handlers_chain(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from eventbus._cli import main
    from eventbus.middlewares import timeout

    async def timing(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        return await call_next(msg, ctx)

    @on("orders", middleware=[timeout(5)])
    async def store(msg: Message, ctx: Context) -> None:
        pass

    module = types.ModuleType("shop_routes")
    module.store = store  # type: ignore[attr-defined]
    module.middleware = [timing]  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "shop_routes", module)
    assert main(["routes", "shop_routes"]) == 0
    assert "middleware=timing,timeout(5)" in capsys.readouterr().out
