"""idempotent(): a key is handled once; a failed attempt is never marked as handled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis

from eventbus import ConfigError, Context, Message, Runner, on, on_stream
from eventbus.middlewares import idempotent
from eventbus.middlewares.idempotent import DuplicateInProgress
from tests.buses import settle
from tests.fault.helpers import eventually
from tests.redis_server import RedisServer


def order_id(msg: Message) -> Any:
    return msg.json()["order"]


async def test_a_duplicate_is_skipped_and_marked_with_its_ttl(
    redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    handled: list[int] = []

    @on("orders", middleware=[idempotent(key=order_id, ttl=600)])
    async def charge(msg: Message, ctx: Context) -> None:
        handled.append(msg.json()["order"])

    async with Runner([charge], url=redis_server.url) as runner:
        assert runner.publisher is not None
        for order in (1, 2, 1, 1):
            await runner.publisher.publish("orders", {"order": order})
        await settle(runner)
        assert runner.stats.handlers["charge"].handled == 4
    assert handled == [1, 2]
    assert sync_redis.get("eventbus:idempotent:charge:1") == b"done"
    assert 590 < sync_redis.ttl("eventbus:idempotent:charge:1") <= 600


async def test_a_failed_message_is_not_marked_so_its_retry_runs(
    redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    attempts = 0

    @on("orders", retries=2, backoff=0.001, middleware=[idempotent(key=order_id)])
    async def flaky(msg: Message, ctx: Context) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise ConnectionError("payment API down")

    @on("other", middleware=[idempotent(key=order_id)])
    async def always_fails(msg: Message, ctx: Context) -> None:
        raise RuntimeError("broken")

    async with Runner([flaky, always_fails], url=redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish("orders", {"order": 7})
        await runner.publisher.publish("other", {"order": 8})
        await settle(runner)
        assert runner.stats.handlers["flaky"].handled == 1
        assert runner.stats.handlers["always_fails"].failed == 1
    assert attempts == 3
    assert sync_redis.get("eventbus:idempotent:flaky:7") == b"done"
    assert sync_redis.get("eventbus:idempotent:always_fails:8") is None  # dead-lettered, not marked


async def test_a_concurrent_duplicate_fails_instead_of_running_twice(redis_server: RedisServer) -> None:
    release = asyncio.Event()
    outcomes: list[str] = []
    mw = idempotent(key=order_id)

    async def handler(msg: Message, ctx: Context) -> None:
        outcomes.append("handler")
        await release.wait()

    async def attempt() -> None:
        try:
            await mw(Message("orders", b'{"order": 3}'), ctx, handler)
            outcomes.append("returned")
        except DuplicateInProgress:
            outcomes.append("duplicate")

    client = redis.asyncio.Redis.from_url(redis_server.url)
    ctx = Context(redis=client, publisher=None, state={}, stats=None, handler="h")  # type: ignore[arg-type]
    try:
        first = asyncio.create_task(attempt())
        await eventually(lambda: outcomes == ["handler"], what="the first attempt holding the claim")
        await attempt()  # while the first holds the claim
        release.set()
        await first
        await attempt()  # after: handled already, skipped (returns None without running)
    finally:
        await client.aclose()
    # The handler ran once: the second attempt failed while the first held the claim, the third was skipped.
    assert outcomes == ["handler", "duplicate", "returned", "returned"]


async def test_streams_default_to_the_entry_id(redis_server: RedisServer) -> None:
    handled: list[str] = []

    @on_stream("payments", group="g", block=0.1, middleware=[idempotent()])
    async def pay(msg: Message, ctx: Context) -> None:
        handled.append(msg.text)

    async with Runner([pay], url=redis_server.url) as runner:
        assert runner.publisher is not None
        entry = await runner.publisher.append("payments", "p1")
        for _ in range(100):
            if handled:
                break
            await asyncio.sleep(0.02)
        await settle(runner)
        assert await runner.redis.get(f"eventbus:idempotent:pay:payments:{entry}") == b"done"
    assert handled == ["p1"]


async def test_the_default_key_on_pub_sub_says_what_to_do() -> None:
    ctx = Context(redis=None, publisher=None, state={}, stats=None, handler="h")  # type: ignore[arg-type]

    async def handler(msg: Message, ctx: Context) -> None:
        pass

    with pytest.raises(ConfigError, match="give key=lambda msg"):
        await idempotent()(Message("c", b"x"), ctx, handler)


@pytest.mark.parametrize(("options", "message"), [({"key": "order"}, "needs a function"), ({"ttl": 0}, "ttl")])
def test_bad_options_fail_with_one_line(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        idempotent(**options)
