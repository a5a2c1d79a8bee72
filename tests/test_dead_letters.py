"""Retries with backoff, the dead-letter stream's contents, and `eventbus dead-letters list|replay`."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Iterator
from types import ModuleType

import orjson
import pytest
from prometheus_client import CollectorRegistry

from eventbus import Context, DeadLetterStore, Message, Reject, Router, connect, on, on_pattern, on_startup
from eventbus._metrics import StatsCollector
from eventbus._replay import replay_dead_letters
from eventbus._runner import summarize
from eventbus._settings import DEFAULT_DEAD_LETTER_STREAM as DEFAULT_STREAM
from tests.cli_process import run_eventbus
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


@pytest.fixture
def failing_app() -> Iterator[ModuleType]:
    """tests/sample_apps/failing.py, failing until the test sets ``healthy``."""
    from tests.sample_apps import failing

    failing.healthy = False
    failing.seen.clear()
    yield failing
    failing.healthy = False
    failing.seen.clear()


async def test_dead_letters_cli_list_and_replay(
    redis_server: RedisServer, subprocess_env: dict[str, str], failing_app: ModuleType
) -> None:
    async with running(failing_app, redis_server.url) as runner:
        await publish_all(runner, "payments", [b"p1", b"p2", b"p3"])
        await eventually(lambda: runner.stats.handlers["pay"].dead_lettered == 3, what="three dead letters")

        listing = await asyncio.to_thread(
            run_eventbus, "dead-letters", "list", "--url", redis_server.url, env=subprocess_env
        )
        assert listing.returncode == 0, listing.stderr
        lines = listing.stdout.splitlines()
        assert len(lines) == 4 and lines[-1] == "3 dead letter(s) shown from 'eventbus:dead-letter'"
        origin = f"{socket.gethostname()}:{os.getpid()}"  # which process wrote it
        for line in lines[:3]:
            assert "  pay  channel 'payments'  attempts=1  2 bytes  " in line, line
            assert line.endswith(f"  {origin}  RuntimeError: payment provider down"), line
        assert "p1" not in listing.stdout  # payloads are counted, not printed
        first_id = lines[0].split()[0]

        failing_app.healthy = True
        replay = ["dead-letters", "replay", "--module", "sample_apps.failing", "--url", redis_server.url]
        one = await asyncio.to_thread(run_eventbus, *replay, "--id", first_id, env=subprocess_env)
        assert one.returncode == 0, one.stderr
        assert one.stdout.splitlines()[0] == f"replayed      {first_id} pay -> channel 'payments'"
        await eventually(lambda: failing_app.seen == [("pay", "payments", b"p1")], what="the replayed letter")
        rest = await asyncio.to_thread(run_eventbus, *replay, "--all", env=subprocess_env)
        assert rest.returncode == 0 and "2 replayed of 2 dead letter(s)" in rest.stdout, rest.stdout + rest.stderr
        await eventually(lambda: len(failing_app.seen) == 3, what="all replayed letters")
        assert sorted(p for _, _, p in failing_app.seen) == [b"p1", b"p2", b"p3"]
        assert await DeadLetterStore(runner.redis).list() == []  # replayed entries are removed

    missing = await asyncio.to_thread(run_eventbus, *replay, "--id", "1-1", env=subprocess_env)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "eventbus: error: no dead letter with id(s): 1-1 in 'eventbus:dead-letter'"


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
    redis_server: RedisServer, subprocess_env: dict[str, str], failing_app: ModuleType
) -> None:
    async with running(failing_app, redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.append("refunds", {"order": "7", "amount": "12.50"})
        await eventually(lambda: runner.stats.handlers["refund"].dead_lettered == 1, what="the dead letter")
        [letter] = await DeadLetterStore(runner.redis).list()
        assert letter.stream == "refunds"

        failing_app.healthy = True
        replay = await asyncio.to_thread(
            run_eventbus,
            *("dead-letters", "replay", "--all", "--module", "sample_apps.failing", "--url", redis_server.url),
            env=subprocess_env,
        )
        assert replay.returncode == 0, replay.stderr
        assert "-> stream 'refunds'" in replay.stdout
        # Back on the stream (not PUBLISHed to a channel nobody reads), with the same content.
        await eventually(lambda: len(failing_app.seen) == 1, what="the replayed entry")
        assert orjson.loads(failing_app.seen[0][2]) == {"order": "7", "amount": "12.50"}
        assert await DeadLetterStore(runner.redis).list() == []


async def test_a_dead_letter_that_cannot_be_written_is_warned_about_and_counted(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An ACL that refuses the dead-letter stream: startup says so, and each loss is counted."""
    with own_redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "nodl", "on", ">pw", "allchannels", "~*", "+@all", "-xadd")
    caplog.set_level(logging.WARNING, "eventbus")

    @on("payments", name="pay")
    async def pay(msg: Message, ctx: Context) -> None:
        raise RuntimeError("payment provider down")

    async with running([pay], f"redis://nodl:pw@127.0.0.1:{own_redis_server.port}/0") as runner:
        assert "dead letters cannot be written to 'eventbus:dead-letter': NOPERM" in caplog.text  # before any
        await publish_all(runner, "payments", [b"%d" % i for i in range(8)])
        await eventually(lambda: runner.stats.handlers["pay"].failed == 8, what="eight failures")
        stats = runner.stats.handlers["pay"]
        assert (stats.failed, stats.dead_lettered, stats.dead_letter_failed) == (8, 0, 8)
        assert "failed=8 rejected=0 retried=0 dropped=0 dead_lettered=0 dead_letter_failed=8" in summarize(runner.stats)
        registry = CollectorRegistry()
        registry.register(StatsCollector(runner.stats))
        assert registry.get_sample_value("eventbus_handler_dead_letter_failed_total", {"handler": "pay"}) == 8
    # Rate-limited (eventbus._logs.LineLimit): the first 5 whole, then one line counting the rest.
    lost = [r for r in caplog.records if "could not dead-letter" in r.getMessage()]
    assert len(lost) == 5
    assert "handler pay: 3 'dead letter not written' line(s) not logged" in caplog.text


async def test_each_entry_names_the_process_that_wrote_it(redis_server: RedisServer) -> None:
    @on("payments", name="pay")
    async def pay(msg: Message, ctx: Context) -> None:
        raise RuntimeError("down")

    async with running([pay], redis_server.url) as runner:
        await publish_all(runner, "payments", [b"1"])
        await eventually(lambda: runner.stats.handlers["pay"].dead_lettered == 1, what="the dead letter")
        [letter] = await DeadLetterStore(runner.redis).list()
    assert (letter.host, letter.pid, letter.worker) == (socket.gethostname(), os.getpid(), None)
    assert letter.origin == f"{socket.gethostname()}:{os.getpid()}"


def test_two_workers_entries_are_told_apart_and_each_replayed_once(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """``run --workers 2``: each worker dead-letters its own copy of a pub/sub message; list names the
    worker, and replay --all sends each entry once."""
    from tests.cli_process import EventbusProcess

    url = redis_server.url
    runner = EventbusProcess(["run", "sample_apps.failing", "--workers", "2", "--url", url], subprocess_env)
    try:
        with redis_server.client() as client:
            deadline = time.monotonic() + 30
            while client.pubsub_numsub("payments") != [(b"payments", 2)]:
                assert time.monotonic() < deadline and runner.process.poll() is None, runner.output
                time.sleep(0.05)
            client.publish("payments", "p1")
            while client.xlen("eventbus:dead-letter") < 2:
                assert time.monotonic() < deadline, runner.output
                time.sleep(0.05)
            listing = run_eventbus("dead-letters", "list", "--url", url, env=subprocess_env)
            lines = listing.stdout.splitlines()[:2]
            assert sorted(line.split("[worker ")[1][:3] for line in lines) == ["1/2", "2/2"], listing.stdout
            pids = {line.split(f"{socket.gethostname()}:")[1].split()[0] for line in lines}
            assert len(pids) == 2  # two processes, told apart

            subscriber = client.pubsub()
            subscriber.subscribe("payments")
            subscriber.get_message(timeout=5)
            replay = run_eventbus(
                "dead-letters", "replay", "--all", "--module", "sample_apps.failing", "--url", url, env=subprocess_env
            )
            assert "2 replayed of 2 dead letter(s)" in replay.stdout, replay.stdout + replay.stderr
            received = []
            while (message := subscriber.get_message(timeout=0.5)) is not None:
                received.append(message["data"])
            assert received == [b"p1", b"p1"]  # one PUBLISH per entry, no more
            subscriber.close()
    finally:
        runner.signal()
        if runner.wait() != 0:
            raise AssertionError(runner.output)


async def test_reading_tolerates_any_entry(redis_server: RedisServer) -> None:
    """Malformed, missing and binary fields are read as such: no exception, each problem named."""
    with redis_server.client() as client:
        bad = client.xadd(DEFAULT_STREAM, {"handler": "pay", "channel": "payments", "payload": b"p", "error": "e",
                                            "attempts": "abc", "ts": "notafloat"})  # fmt: skip
        empty = client.xadd(DEFAULT_STREAM, {"x": "y"})
        binary = client.xadd(DEFAULT_STREAM, {"handler": b"\xff\x1b[2J", "channel": b"\xfe", "payload": b"\x00",
                                               "error": b"\x80", "attempts": "1", "ts": "nan", "pid": "x"})  # fmt: skip
        good = client.xadd(DEFAULT_STREAM, {"handler": "pay", "channel": "payments", "pattern": "", "payload": b"ok",
                                             "error": "e", "attempts": "2", "ts": "1.5"})  # fmt: skip
    async with connect(redis_server.url) as bus:
        store = DeadLetterStore(bus.redis)
        for letters in (await store.list(), await store.summaries()):
            by_id = {letter.id: letter for letter in letters}
            assert by_id[bad.decode()].problems == ("attempts 'abc' is not a number", "ts 'notafloat' is not a number")
            assert "no handler field" in by_id[empty.decode()].problems
            odd = by_id[binary.decode()]
            assert odd.channel == "\udcfe" and odd.handler == "\ufffd\x1b[2J"
            assert odd.problems == ("ts 'nan' is not a number", "pid 'x' is not a number")
            assert by_id[good.decode()].problems == () and by_id[good.decode()].attempts == 2
        assert (await store.get(good.decode())) is not None and await store.get("nonsense") is None
        from tests.sample_apps import failing

        report = await replay_dead_letters(store, Router.from_module(failing), ids=[good.decode()], dry_run=True)
        assert [o.action for o in report.outcomes] == ["would replay"]


async def test_an_app_has_its_own_dead_letter_stream(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    @on("payments", name="pay")
    async def pay(msg: Message, ctx: Context) -> None:
        raise RuntimeError("down")

    @on_startup
    async def choose(ctx: Context) -> None:
        assert ctx.dead_letters is not None
        ctx.dead_letters.stream = f"{ctx.dead_letters.stream}:chosen"  # a startup hook may choose one

    async with running([pay], redis_server.url, dead_letter_stream="shop:dead-letter") as runner:
        await publish_all(runner, "payments", [b"1"])
        await eventually(lambda: runner.stats.handlers["pay"].dead_lettered == 1, what="the dead letter")
    async with running([pay, choose], redis_server.url, dead_letter_stream="shop:dead-letter") as runner:
        await publish_all(runner, "payments", [b"2"])
        await eventually(lambda: runner.stats.handlers["pay"].dead_lettered == 1, what="the dead letter")
        assert runner.dead_letter_stream == "shop:dead-letter:chosen"
    with redis_server.client() as client:
        assert not client.exists(DEFAULT_STREAM)
        assert client.xlen("shop:dead-letter") == 1 and client.xlen("shop:dead-letter:chosen") == 1
    listing = await asyncio.to_thread(
        run_eventbus, "dead-letters", "list", "--dead-letter-stream", "shop:dead-letter", "--url", redis_server.url,
        env=subprocess_env,
    )  # fmt: skip
    assert listing.stdout.splitlines()[-1] == "1 dead letter(s) shown from 'shop:dead-letter'"


@pytest.mark.fault
@pytest.mark.slow
async def test_a_dead_letter_lost_with_redis_is_counted(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis gone for longer than the client's retries when the dead letter is written: counted, logged."""
    caplog.set_level(logging.ERROR, "eventbus.deadletter")
    started, killed = asyncio.Event(), asyncio.Event()

    @on("payments", name="pay")
    async def pay(msg: Message, ctx: Context) -> None:
        started.set()
        await killed.wait()  # Redis goes away meanwhile
        raise RuntimeError("down")

    async with running([pay], own_redis_server.url) as runner:
        await publish_all(runner, "payments", [b"1"])
        await asyncio.wait_for(started.wait(), 10)
        own_redis_server.kill()
        killed.set()
        await eventually(lambda: runner.stats.handlers["pay"].dead_letter_failed == 1, what="the loss", timeout=60)
        stats = runner.stats.handlers["pay"]
        assert (stats.failed, stats.dead_lettered) == (1, 0)
        assert "dead_lettered=0 dead_letter_failed=1" in summarize(runner.stats)
        own_redis_server.start()  # for a clean stop
    assert "could not dead-letter a message of handler pay on 'payments' to 'eventbus:dead-letter'" in caplog.text
