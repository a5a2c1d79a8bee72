"""``redis+sentinel://`` against real redis-server and ``redis-server --sentinel`` processes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest
import redis

from eventbus import ConfigError, Context, Message, Runner, on
from eventbus._backends import validate_url
from eventbus._errors import ConnectError
from eventbus._urls import redact_url
from tests.redis_server import SERVICE, RedisServer, SentinelProcess


@pytest.fixture
def master() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def sentinel(master: RedisServer) -> Iterator[SentinelProcess]:
    process = SentinelProcess(master.port)
    yield process
    process.stop()


async def wait_for(condition: object, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_sentinel_urls_are_validated_with_one_line_naming_the_bad_part() -> None:
    assert validate_url("redis+sentinel://127.0.0.1:26379,h2:26380/mymaster?db=2")
    assert validate_url("rediss+sentinel://h:26379/mymaster")
    for url, bad in [
        ("redis+sentinel://h:26379", "no service name"),
        ("redis+sentinel://h:port/m", "invalid sentinel 'h:port'"),
        ("redis+sentinel://h:1/m?db=x", "invalid database number 'x'"),
        ("redis+sentinel://h:1/m?dbb=1", "unknown option 'dbb'"),
    ]:
        with pytest.raises(ConfigError, match=bad) as info:
            validate_url(url)
        assert "\n" not in str(info.value)


def test_sentinel_urls_are_redacted() -> None:
    url = "redis+sentinel://u:hunter2@h1:1,h2:2/m?db=1&sentinel_password=s3cret"
    assert redact_url(url) == "redis+sentinel://u:***@h1:1,h2:2/m?db=1&sentinel_password=***"
    assert "hunter2" not in redact_url("redis+sentinel://u:hunter2@h1:1/m")


async def test_unknown_service_name_fails_at_startup_with_one_line(sentinel: SentinelProcess) -> None:
    @on("x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    with pytest.raises(ConnectError, match="monitors a master named 'nosuch'") as info:
        async with Runner([handler], url=f"redis+sentinel://127.0.0.1:{sentinel.port}/nosuch"):
            pass
    assert "\n" not in str(info.value)


async def test_master_password_is_used_and_never_logged(master: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    master.client().config_set("requirepass", "hunter2")
    sentinel = SentinelProcess(master.port, f"sentinel auth-pass {SERVICE} hunter2\n")
    try:
        seen: list[bytes] = []

        @on("orders")
        async def record(msg: Message, ctx: Context) -> None:
            await ctx.redis.set("last", msg.data)
            seen.append(msg.data)

        caplog.set_level(logging.DEBUG)
        url = f"redis+sentinel://:hunter2@127.0.0.1:{sentinel.port}/{SERVICE}?db=1"
        async with Runner([record], url=url) as runner:
            await runner.publisher.publish("orders", "one")  # type: ignore[union-attr]
            await wait_for(lambda: seen == [b"one"])
        assert redis.Redis(port=master.port, password="hunter2", db=1).get("last") == b"one"
        assert "hunter2" not in caplog.text
        assert "redis+sentinel://:***@127.0.0.1" in caplog.text
    finally:
        sentinel.stop()


@pytest.mark.fault
async def test_runner_follows_a_failover_to_the_new_master(master: RedisServer) -> None:
    replica = RedisServer(extra_args=["--replicaof", "127.0.0.1", str(master.port)]).start()
    sentinel: SentinelProcess | None = None
    try:
        # The sentinel learns of replicas from the master's INFO, which it reads at once on
        # connecting and then only every 10 s: start it when the replica is already attached.
        await wait_for(lambda: replica.client().info("replication").get("master_link_status") == "up")
        sentinel = SentinelProcess(master.port)
        sentinel_client = sentinel.client()
        seen: list[bytes] = []

        @on("orders")
        async def record(msg: Message, ctx: Context) -> None:
            await ctx.redis.incr("orders:count")
            seen.append(msg.data)

        async with Runner([record], url=f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}"):
            master.client().publish("orders", "before")
            await wait_for(lambda: len(seen) == 1)
            for _ in range(200):  # NOGOODSLAVE until the sentinel has seen the replica
                try:
                    sentinel_client.execute_command("SENTINEL", "FAILOVER", SERVICE)
                    break
                except redis.ResponseError:
                    await asyncio.sleep(0.05)
            await wait_for(
                lambda: (
                    sentinel_client.execute_command("SENTINEL", "get-master-addr-by-name", SERVICE)[1]
                    == str(replica.port).encode()
                )
            )
            # Publish on the new master until the resubscribed runner hears it.
            for _ in range(200):
                replica.client().publish("orders", "after")
                if b"after" in seen:
                    break
                await asyncio.sleep(0.05)
            assert b"after" in seen
            # ctx.redis followed too: the handler's INCR landed on the new master.
            await wait_for(lambda: int(replica.client().get("orders:count") or 0) >= 2)
    finally:
        if sentinel is not None:
            sentinel.stop()
        replica.stop()


async def test_a_stop_soon_after_the_start_returns(redis_sentinel: tuple[RedisServer, SentinelProcess]) -> None:
    # The failover listener's redis-py PubSub swallowed its cancellation when the stop came while
    # it was still connecting, and stop() waited for it for ever.
    _, sentinel = redis_sentinel

    @on("x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    for delay in (0, 0.001, 0.002, 0.005):
        runner = Runner([handler], url=sentinel.url, grace=1.0)
        await runner.start()
        await asyncio.sleep(delay)  # the window this is about: a fixed delay by design
        await asyncio.wait_for(runner.stop(), 10)
