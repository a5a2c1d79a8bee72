"""The dead-letter stream's byte budget, against real redis-server processes and ACL users.

A flood of failing messages must not fill Redis: the oldest dead letters go first, within seconds,
every trim is counted, and a user who may only XADD still gets a bounded stream.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time

import pytest
from prometheus_client import CollectorRegistry

from eventbus import ConfigError, Context, DeadLetterStore, Message, Reject, Runner, connect, on
from eventbus._deadletter import resolve_max_bytes
from eventbus._deadletter_budget import CHECK_INTERVAL
from eventbus._metrics import StatsCollector
from eventbus._runner import summarize
from eventbus._settings import DEFAULT_DEAD_LETTER_MAX_BYTES as DEFAULT_MAX_BYTES
from eventbus._settings import DEFAULT_DEAD_LETTER_STREAM as DEFAULT_STREAM
from eventbus._settings import ENV_DEAD_LETTER_MAX_BYTES as ENV_MAX_BYTES
from eventbus._settings import parse_size
from eventbus._stats import BusStats
from tests.conftest import ROOT
from tests.fault.helpers import FAST, eventually
from tests.redis_server import RedisServer, acl_denials

# What the runner needs on its dead-letter stream, as the README's ACL table says.
RUNNER_DEAD_LETTERS = ("+xadd", "+xlen", "+xtrim", "+memory|usage", f"~{DEFAULT_STREAM}")
RUNNER_HEARTBEAT = ("+hset", "+set", "+expire", "~eventbus:{heartbeat}:*")  # docs/security.md's runner rule


def test_sizes_and_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert DEFAULT_MAX_BYTES == 32 * 1024 * 1024
    assert [parse_size(t) for t in ("1000", "32MiB", "32m", "512 KiB", "1GiB", "2kb")] == [
        1000, 32 << 20, 32 << 20, 512 << 10, 1 << 30, 2048,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="not a size: '12 parsecs'"):
        parse_size("12 parsecs")
    monkeypatch.setenv(ENV_MAX_BYTES, "8MiB")
    assert resolve_max_bytes(None) == 8 << 20 and resolve_max_bytes(100) == 100
    monkeypatch.setenv(ENV_MAX_BYTES, "lots")
    with pytest.raises(ConfigError, match=r"\$EVENTBUS_DEAD_LETTER_MAX_BYTES: not a size: 'lots'"):
        resolve_max_bytes(None)
    monkeypatch.delenv(ENV_MAX_BYTES)
    assert resolve_max_bytes(None) == DEFAULT_MAX_BYTES


def test_a_bad_budget_is_one_line_exit_2(subprocess_env: dict[str, str]) -> None:
    for args, env in (
        (["--dead-letter-max-bytes", "lots"], subprocess_env),
        ([], subprocess_env | {ENV_MAX_BYTES: "lots"}),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "eventbus", "run", "sample_apps.failing", "--no-embedded", *args],
            capture_output=True, text=True, timeout=60, env=env, cwd=ROOT,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        # The option is argparse's (usage, then the error line); the variable's is one line.
        assert "error: " in result.stderr.splitlines()[-1] and "not a size: 'lots'" in result.stderr
        assert "Traceback" not in result.stderr and (args or result.stderr.count("\n") == 1)


async def used(client: object, stream: str = DEFAULT_STREAM) -> int:
    return int(await client.memory_usage(stream, samples=0) or 0)  # type: ignore[attr-defined]


@pytest.mark.slow
async def test_a_flood_of_large_bad_messages_stays_under_the_budget(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """20,000 x 20 KB rejected messages (400 MB of dead letters) with the default 32 MiB budget."""
    caplog.set_level(logging.WARNING, "eventbus.deadletter")
    with own_redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "runner", "on", ">pw", "allchannels", "-@all", "+@pubsub", "+ping", "+info",
            *RUNNER_DEAD_LETTERS, *RUNNER_HEARTBEAT,
        )  # fmt: skip

    @on("junk", concurrency=8)
    async def picky(msg: Message, ctx: Context) -> None:
        raise Reject("not for me")

    url = f"redis://runner:pw@127.0.0.1:{own_redis_server.port}/0"
    logging.getLogger("eventbus.worker").disabled = True  # one warning per rejection is not this test's subject
    try:
        async with Runner([picky], url=url, **FAST) as runner, connect(own_redis_server.url) as admin:
            payload = b"x" * 20_000
            stats = runner.stats.handlers["picky"]
            for sent in range(0, 20_000, 500):
                pipe = admin.redis.pipeline(transaction=False)
                for _ in range(500):
                    pipe.publish("junk", payload)
                await pipe.execute()
                # Publish no faster than the handler rejects: the inbox is not what is measured here.
                await eventually(lambda sent=sent: stats.rejected >= sent, what="rejections", timeout=60)
            await eventually(lambda: stats.dead_lettered == 20_000, what="20,000 dead letters", timeout=60)
            started = time.monotonic()
            while await used(admin.redis) > DEFAULT_MAX_BYTES:
                assert time.monotonic() - started < 3 * CHECK_INTERVAL, "not trimmed within seconds"
                await asyncio.sleep(0.05)
            length = await admin.redis.xlen(DEFAULT_STREAM)
            assert length > 1000  # the newest ones are kept, as many as fit
            trimmed = runner.stats.dead_letters_trimmed
            assert trimmed >= 20_000 - length  # every trimmed entry counted
            assert f"dead_letters_trimmed={trimmed}" in summarize(runner.stats)
            registry = CollectorRegistry()
            registry.register(StatsCollector(runner.stats))
            assert registry.get_sample_value("eventbus_dead_letters_trimmed_total") == trimmed
            info = await admin.redis.info("memory")
            assert int(info["used_memory"]) < 2 * DEFAULT_MAX_BYTES
    finally:
        logging.getLogger("eventbus.worker").disabled = False
    trims = [r.getMessage() for r in caplog.records if "was over its limits" in r.getMessage()]
    assert 1 <= len(trims) <= 3  # logged, rate-limited: not one line per trim
    assert "trimmed the oldest" in trims[0]
    with own_redis_server.client() as client:
        assert [d for d in acl_denials(client) if d[1] != "client|setname"] == []


async def test_a_stream_over_its_budget_is_trimmed_without_another_write(redis_server: RedisServer) -> None:
    """Other processes filled the stream; one more write here, then nothing: a timer still trims it."""
    budget = 200_000
    async with connect(redis_server.url) as bus:
        stats = BusStats()
        store = DeadLetterStore(bus.redis, max_bytes=budget, stats=stats)
        await store.add("h", Message("c", b"first"), "e", 1)  # measured at once: within budget
        pipe = bus.redis.pipeline(transaction=False)
        for _ in range(100):  # 1 MB from elsewhere, which this process does not count
            pipe.xadd(DEFAULT_STREAM, {"payload": b"y" * 10_000})
        await pipe.execute()
        await store.add("h", Message("c", b"last"), "e", 1)  # too soon after the last check: a timer is set
        assert await used(bus.redis) > budget
        started = time.monotonic()
        await eventually(lambda: stats.dead_letters_trimmed > 0, what="the timer's trim", timeout=5)
        assert time.monotonic() - started <= CHECK_INTERVAL + 1.0
        assert await used(bus.redis) <= budget
        # The oldest went first: the last write is still there.
        [(_, newest)] = await bus.redis.xrevrange(DEFAULT_STREAM, count=1)
        assert newest[b"payload"] == b"last"
        store.close()


async def test_a_user_that_may_only_xadd_still_gets_a_bounded_stream(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    with own_redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "writer", "on", ">pw", "allchannels", "-@all", "+@pubsub", "+ping", "+info", "+xadd",
            f"~{DEFAULT_STREAM}",
        )  # fmt: skip
    caplog.set_level(logging.WARNING, "eventbus")

    @on("junk")
    async def picky(msg: Message, ctx: Context) -> None:
        raise Reject("no")

    url = f"redis://writer:pw@127.0.0.1:{own_redis_server.port}/0"
    async with Runner([picky], url=url, dead_letter_max_bytes=200_000, **FAST) as runner:
        assert "cannot be measured or trimmed" in caplog.text and "uncounted" in caplog.text
        for _ in range(300):
            await runner.publisher.publish("junk", b"z" * 10_000)  # type: ignore[union-attr]
        await eventually(lambda: runner.stats.handlers["picky"].dead_lettered == 300, what="300 dead letters")
    with own_redis_server.client() as admin:
        assert admin.xlen(DEFAULT_STREAM) < 40  # about budget / entry size, not 300
        assert int(admin.memory_usage(DEFAULT_STREAM, samples=0)) < 2 * 200_000
