"""What only a real server can show: one connection for everything, and a pool that waits."""

from __future__ import annotations

import asyncio

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry

from eventbus import Context, Message, Runner, on, on_pattern
from eventbus._backends.autopipeline import AutoPipelineRedis
from eventbus._backends.subscriber import command_client
from tests.buses import settle
from tests.fault.helpers import eventually
from tests.redis_server import RedisServer


def pubsub_clients(client: redis.Redis) -> list[dict[str, object]]:
    return [c for c in client.client_list() if c.get("name", "").startswith("eventbus-sub")]


async def test_ten_thousand_channels_share_one_connection(redis_server: RedisServer, sync_redis: redis.Redis) -> None:
    seen: list[str] = []

    @on(*(f"ch:{i}" for i in range(10_000)))
    @on_pattern("other:*")
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(msg.channel)

    async with Runner([record], url=redis_server.url) as runner:
        clients = pubsub_clients(sync_redis)
        assert len(clients) == 1
        assert (clients[0]["sub"], clients[0]["psub"]) == ("10000", "1")
        assert sync_redis.pubsub_numsub("ch:0", "ch:9999") == [(b"ch:0", 1), (b"ch:9999", 1)]
        await runner.publisher.publish("ch:9999", "last")  # type: ignore[union-attr]
        await runner.publisher.publish("other:x", "p")  # type: ignore[union-attr]
        await runner.publisher.publish("ch:0", "first")  # type: ignore[union-attr]
        for _ in range(100):
            if len(seen) == 3:
                break
            await asyncio.sleep(0.01)
    assert seen == ["ch:9999", "other:x", "ch:0"]


@pytest.mark.parametrize("autopipeline", [True, False], ids=["auto-pipelining", "plain"])
async def test_thousands_of_handlers_using_ctx_redis_at_once(
    autopipeline: bool, redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    @on("hits", concurrency=3000, inbox_size=20_000)
    async def count(msg: Message, ctx: Context) -> None:
        await ctx.redis.incr("hits")
        await ctx.redis.sadd("seen", msg.data)

    async with Runner([count], url=redis_server.url, max_connections=16, autopipeline=autopipeline) as runner:
        pipe = sync_redis.pipeline(transaction=False)
        for i in range(6000):
            pipe.publish("hits", i)
        pipe.execute()
        for _ in range(1000):
            await asyncio.sleep(0.01)
            if runner.stats.handlers["count"].received == 6000 and runner.idle():
                break
        stats = runner.stats.handlers["count"]
        assert (stats.handled, stats.failed) == (6000, 0)
        # The pool is bounded: handlers waited for a connection instead of opening thousands.
        assert len(sync_redis.client_list()) <= 16 + 3
    assert sync_redis.get("hits") == b"6000"
    assert sync_redis.scard("seen") == 6000


async def test_subscriber_connection_is_separate_from_the_command_client(
    redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    @on("x")
    async def uses_redis(msg: Message, ctx: Context) -> None:
        await ctx.redis.set("x", msg.data)

    async with Runner([uses_redis], url=redis_server.url) as runner:
        await runner.publisher.publish("x", "1")  # type: ignore[union-attr]
        await settle(runner)
    assert sync_redis.get("x") == b"1"


@pytest.mark.parametrize("autopipeline", [True, False], ids=["auto-pipelining", "plain"])
def test_no_connection_sends_client_setinfo(autopipeline: bool) -> None:
    """Redis 7.2+ checks CLIENT SETINFO against the ACL: a least-privilege user would be denied it at
    every connect (README "Security"). A 7.0 server, as here, cannot show it: the settings can."""
    client = command_client("redis://127.0.0.1:1/0", autopipeline=autopipeline)
    connection = client.connection_pool.make_connection()
    assert getattr(connection, "driver_info", None) is None and getattr(connection, "lib_name", None) is None


async def test_without_autopipelining_the_command_client_is_plain_redis_asyncio(
    redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    client = command_client(f"{redis_server.url}?client_name=plain-ctx-redis", max_connections=4, autopipeline=False)
    assert type(client) is aioredis.Redis
    # The same policy as the auto-pipelining client: a bounded pool that waits, retries, owns its pool.
    pool = client.connection_pool
    assert isinstance(pool, aioredis.BlockingConnectionPool) and pool.max_connections == 4
    assert isinstance(pool.connection_kwargs.get("retry"), Retry)
    assert await asyncio.gather(*(client.incr("n") for _ in range(50)))
    assert sync_redis.get("n") == b"50"
    await client.aclose()
    # Closed on our side at once; the server notices each closed socket on its next event-loop turn.
    await eventually(
        lambda: not [c for c in sync_redis.client_list() if c["name"] == "plain-ctx-redis"],
        what="the server to see the pool's connections closed",
    )


async def test_eventbus_autopipeline_0_makes_the_default_plain(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENTBUS_AUTOPIPELINE", "0")
    plain, chosen = command_client(redis_server.url), command_client(redis_server.url, autopipeline=True)
    assert type(plain) is aioredis.Redis and type(chosen) is AutoPipelineRedis
    await plain.aclose()
    await chosen.aclose()
