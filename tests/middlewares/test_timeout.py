"""timeout(seconds): an overrunning attempt fails clearly and is retried, then dead-lettered."""

from __future__ import annotations

import asyncio

import pytest

from eventbus import ConfigError, Context, Message, Runner, on
from eventbus._deadletter import DeadLetterStore
from eventbus.middlewares import HandlerTimeout, timeout
from tests.buses import settle
from tests.redis_server import RedisServer


async def test_an_overrun_is_retried_then_dead_lettered_with_a_clear_error(redis_server: RedisServer) -> None:
    attempts: list[str] = []

    @on("jobs", retries=1, backoff=0.001, middleware=[timeout(0.05)])
    async def slow(msg: Message, ctx: Context) -> None:
        attempts.append(msg.text)
        if msg.text == "slow":
            await asyncio.sleep(5)

    async with Runner([slow], url=redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish("jobs", "slow")
        await runner.publisher.publish("jobs", "fast")
        await settle(runner)
        stats = runner.stats.handlers["slow"]
        assert (stats.handled, stats.retried, stats.failed, stats.dead_lettered) == (1, 1, 1, 1)
        letters = await DeadLetterStore(runner.redis).list()
    assert attempts == ["slow", "slow", "fast"]
    assert letters[0].error == "HandlerTimeout: handler slow took longer than its 0.05s timeout"


async def test_the_handlers_own_timeout_error_is_not_renamed() -> None:
    async def handler(msg: Message, ctx: Context) -> None:
        raise TimeoutError("the upstream API timed out")

    mw = timeout(10)
    ctx = Context(redis=None, publisher=None, state={}, stats=None, handler="h")  # type: ignore[arg-type]
    with pytest.raises(TimeoutError, match="upstream") as caught:
        await mw(Message("c", b""), ctx, handler)
    assert not isinstance(caught.value, HandlerTimeout)


async def test_a_result_passes_through() -> None:
    async def handler(msg: Message, ctx: Context) -> int:
        return 42

    ctx = Context(redis=None, publisher=None, state={}, stats=None, handler="h")  # type: ignore[arg-type]
    assert await timeout(1)(Message("c", b""), ctx, handler) == 42


@pytest.mark.parametrize("bad", [0, -1, "5", True, None])
def test_bad_seconds_fail_with_one_line(bad: object) -> None:
    with pytest.raises(ConfigError, match="needs a number of seconds > 0"):
        timeout(bad)  # type: ignore[arg-type]
