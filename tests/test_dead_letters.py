"""Retries with backoff, the dead-letter stream's contents, and `eventbus dead-letters list|replay`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import pytest

from eventbus import Context, DeadLetterStore, Message, Reject, on, on_pattern
from tests.conftest import ROOT
from tests.fault.helpers import eventually, publish_all, running
from tests.redis_server import RedisServer


async def test_retries_with_backoff_then_success(redis_server: RedisServer) -> None:
    attempts: list[float] = []

    @on("jobs", name="flaky", retries=3, backoff=0.05)
    async def flaky(msg: Message, ctx: Context) -> None:
        attempts.append(time.monotonic())
        if len(attempts) < 3:
            raise ConnectionError("upstream hiccup")

    async with running([flaky], redis_server.url) as runner:
        await publish_all(runner, "jobs", [b"1"])
        await eventually(lambda: runner.stats.handlers["flaky"].handled == 1, what="the third attempt")
        stats = runner.stats.handlers["flaky"]
        assert (stats.retried, stats.failed, stats.dead_lettered) == (2, 0, 0)
        assert await DeadLetterStore(runner.redis).list() == []
    # Exponential backoff with jitter in [0.5, 1.5): the waits are at least 0.025 s, then 0.05 s.
    assert attempts[1] - attempts[0] >= 0.025
    assert attempts[2] - attempts[1] >= 0.05


async def test_dead_letter_after_the_last_try_has_everything(redis_server: RedisServer) -> None:
    @on_pattern("orders:*", name="broken", retries=2, backoff=0)
    async def broken(msg: Message, ctx: Context) -> None:
        raise ValueError("cannot parse order")

    @on("orders:eu", name="refuser")
    async def refuser(msg: Message, ctx: Context) -> None:
        raise Reject("unknown region")

    async with running([broken, refuser], redis_server.url) as runner:
        await publish_all(runner, "orders:eu", [b'{"id": 1}', b"\x00\xffbinary"])
        await eventually(
            lambda: (
                runner.stats.handlers["broken"].dead_lettered == 2
                and runner.stats.handlers["refuser"].dead_lettered == 2
            ),
            what="four dead letters",
        )
        letters = await DeadLetterStore(runner.redis).list()
        stats = runner.stats.handlers
        assert (stats["broken"].failed, stats["broken"].retried) == (2, 4)
        assert (stats["refuser"].rejected, stats["refuser"].retried) == (2, 0)
    by_handler = {(d.handler, d.payload): d for d in letters}
    assert len(letters) == 4
    broken_letter = by_handler[("broken", b'{"id": 1}')]
    assert broken_letter.channel == "orders:eu"
    assert broken_letter.pattern == "orders:*"
    assert broken_letter.attempts == 3
    assert broken_letter.error == "ValueError: cannot parse order"
    assert broken_letter.ts > 0
    rejected = by_handler[("refuser", b"\x00\xffbinary")]  # binary payloads survive byte for byte
    assert (rejected.channel, rejected.pattern, rejected.attempts) == ("orders:eu", None, 1)
    assert rejected.error == "rejected: unknown region"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


async def test_dead_letters_cli_list_and_replay(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    healthy = False
    done: list[bytes] = []

    @on("payments", name="pay")
    async def pay(msg: Message, ctx: Context) -> None:
        if not healthy:
            raise RuntimeError("payment provider down")
        done.append(msg.data)

    async with running([pay], redis_server.url) as runner:
        await publish_all(runner, "payments", [b"p1", b"p2", b"p3"])
        await eventually(lambda: runner.stats.handlers["pay"].dead_lettered == 3, what="three dead letters")

        listing = await asyncio.to_thread(cli, "dead-letters", "list", "--url", redis_server.url, env=subprocess_env)
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.splitlines()
        assert len(lines) == 4 and lines[-1].startswith("3 dead letter(s) shown")
        assert all(
            "pay  'payments'  attempts=1  2 bytes  RuntimeError: payment provider down" in line for line in lines[:3]
        )
        assert "p1" not in listing.stdout  # payloads are counted, not printed
        first_id = lines[0].split()[0]

        healthy = True
        one = await asyncio.to_thread(
            cli, "dead-letters", "replay", "--id", first_id, "--url", redis_server.url, env=subprocess_env
        )
        assert one.returncode == 0, one.stderr
        await eventually(lambda: done == [b"p1"], what="the replayed letter")
        rest = await asyncio.to_thread(
            cli, "dead-letters", "replay", "--all", "--url", redis_server.url, env=subprocess_env
        )
        assert rest.returncode == 0 and "replayed 2 dead letter(s)" in rest.stdout
        await eventually(lambda: sorted(done) == [b"p1", b"p2", b"p3"], what="all replayed letters")
        assert await DeadLetterStore(runner.redis).list() == []  # replayed entries are removed

    missing = await asyncio.to_thread(
        cli, "dead-letters", "replay", "--id", "1-1", "--url", redis_server.url, env=subprocess_env
    )
    assert missing.returncode == 2
    assert missing.stderr.strip() == "eventbus: error: no dead letter with id(s): 1-1"


@pytest.mark.parametrize("backoff", [0.0, 0.01])
async def test_retry_count_is_exact_under_load(redis_server: RedisServer, backoff: float) -> None:
    @on("many", name="always_fails", retries=2, backoff=backoff, concurrency=10)
    async def always_fails(msg: Message, ctx: Context) -> None:
        raise KeyError(msg.text)

    async with running([always_fails], redis_server.url) as runner:
        await publish_all(runner, "many", [str(i) for i in range(30)])
        await eventually(lambda: runner.stats.handlers["always_fails"].dead_lettered == 30, what="30 dead letters")
        stats = runner.stats.handlers["always_fails"]
        assert (stats.received, stats.retried, stats.failed, stats.handled) == (30, 60, 30, 0)
        letters = await DeadLetterStore(runner.redis).list(count=100)
        assert sorted(int(d.payload) for d in letters) == list(range(30))
        assert {d.attempts for d in letters} == {3}


async def test_replay_puts_a_stream_dead_letter_back_on_its_stream(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    from eventbus import on_stream

    healthy = False
    done: list[object] = []

    @on_stream("refunds", group="accounting", block=0.1)
    async def refund(msg: Message, ctx: Context) -> None:
        if not healthy:
            raise Reject("bank says no")
        done.append(msg.json())

    async with running([refund], redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.append("refunds", {"order": "7", "amount": "12.50"})
        await eventually(lambda: runner.stats.handlers["refund"].dead_lettered == 1, what="the dead letter")
        [letter] = await DeadLetterStore(runner.redis).list()
        assert letter.stream == "refunds"

        healthy = True
        replay = await asyncio.to_thread(
            cli, "dead-letters", "replay", "--all", "--url", redis_server.url, env=subprocess_env
        )
        assert replay.returncode == 0, replay.stderr
        # Back on the stream (not PUBLISHed to a channel nobody reads), with the same content.
        await eventually(lambda: done == [{"order": "7", "amount": "12.50"}], what="the replayed entry")
        assert await DeadLetterStore(runner.redis).list() == []
