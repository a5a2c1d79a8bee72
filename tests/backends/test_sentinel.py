"""``redis+sentinel://`` against real redis-server and ``redis-server --sentinel`` processes."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventbus import ConfigError, Context, Message, Runner, on
from eventbus._backends import validate_url
from eventbus._backends.embedded import wait_for_ping
from eventbus._errors import ConnectError
from eventbus._urls import redact_url
from tests.redis_server import RedisServer, free_port

SERVICE = "mymaster"


class SentinelProcess:
    """One ``redis-server --sentinel`` watching ``master_port``, on a free port."""

    def __init__(self, master_port: int, extra: str = "") -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="eventbus-test-sentinel-")
        conf = Path(self.dir) / "sentinel.conf"  # a sentinel rewrites its config: it must be writable
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir}/sentinel.log\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n{extra}"
        )
        self.process = subprocess.Popen(["redis-server", str(conf), "--sentinel"])
        wait_for_ping(self.port, self.process, 10.0)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)


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


async def test_runner_on_sentinel_url_receives_and_uses_ctx_redis(
    master: RedisServer, sentinel: SentinelProcess
) -> None:
    seen: list[bytes] = []

    @on("orders")
    async def record(msg: Message, ctx: Context) -> None:
        await ctx.redis.incr("orders:count")
        seen.append(msg.data)

    async with Runner([record], url=f"redis+sentinel://127.0.0.1:{sentinel.port}/{SERVICE}") as runner:
        await runner.publisher.publish("orders", "one")  # type: ignore[union-attr]
        master.client().publish("orders", "two")
        await wait_for(lambda: len(seen) == 2)
    assert sorted(seen) == [b"one", b"two"]
    assert master.client().get("orders:count") == b"2"


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
