"""Request/reply (eventbus._requests, the requester; eventbus._replies, the responder): each rule on a
real redis-server and on the in-memory transport that TestBus uses."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
import pytest
import redis

import eventbus
from eventbus import (
    Context,
    Message,
    NoResponderError,
    Reject,
    RemoteError,
    RemoteRejected,
    RequestInterruptedError,
    RequestTimeoutError,
    Runner,
    on,
    on_pattern,
)
from eventbus._backends.memory import MemoryBroker
from eventbus.testing import TestBus
from tests.fault.helpers import FAST, eventually
from tests.redis_server import RedisServer

# Every test here runs alike on both: the in-memory transport must behave like Redis.
BACKENDS = ["memory", "redis"]


@asynccontextmanager
async def serving(backend: str, handlers: Any, request: pytest.FixtureRequest, **options: Any) -> AsyncIterator[Runner]:
    if backend == "memory":
        runner = Runner(handlers, broker=MemoryBroker(), **{**FAST, **options})
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        runner = Runner(handlers, url=server.url, **{**FAST, **options})
    async with runner:
        yield runner


def bus_of(runner: Runner) -> eventbus.Publisher:
    assert runner.publisher is not None
    return runner.publisher


class Quote(msgspec.Struct):
    pair: str


@dataclasses.dataclass
class Rate:
    pair: str
    rate: float


@on("rates.get")
async def rate(quote: Quote, ctx: Context) -> Rate:
    return Rate(quote.pair, 1.25)


@on("echo")
async def echo(msg: Message, ctx: Context) -> bytes:
    return msg.data


@on("nothing")
async def nothing(msg: Message, ctx: Context) -> None:
    return None


@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_reply_is_the_handlers_return_value_typed_or_raw(
    backend: str, request: pytest.FixtureRequest
) -> None:
    async with serving(backend, [rate, echo, nothing], request) as runner:
        bus = bus_of(runner)
        # Typed both ways: the request encoded by the payload codecs, the reply decoded as asked.
        assert await bus.request("rates.get", Quote(pair="EURUSD"), reply_type=Rate) == Rate("EURUSD", 1.25)
        # Without reply_type: the reply as an unannotated handler receives a message.
        reply = await bus.request("rates.get", {"pair": "GBPUSD"})
        assert isinstance(reply, Message) and reply.json() == {"pair": "GBPUSD", "rate": 1.25}
        assert reply.channel == "rates.get"
        # Raw bytes, a leading 0 byte included, arrive and return untouched.
        raw = b"\x00EBRQ1" + bytes(range(256))
        assert (await bus.request("echo", raw)).data == raw
        assert await bus.request("echo", b"", reply_type=bytes) == b""
        assert (await bus.request("nothing", "x")).data == b""
        # Counted once PUBLISH answered, which may be after the requester had the reply.
        await eventually(lambda: runner.stats.requests.replies_sent == 5, what="the replies counted")


@pytest.mark.parametrize("backend", BACKENDS)
async def test_plain_messages_that_start_with_a_zero_byte_stay_plain(
    backend: str, request: pytest.FixtureRequest
) -> None:
    got: list[bytes] = []

    @on("binary")
    async def binary(msg: Message, ctx: Context) -> None:
        got.append(msg.data)

    payloads = [
        b"\x00",
        b"\x00abc",
        b"\x00EBRQ1",
        b"\x00EBRQ1\x00\x00\x00\x09{not json",
        b"\x00EBRQ1\x00\x00\x00\x02[]",
    ]
    async with serving(backend, [binary], request) as runner:
        for payload in payloads:
            await bus_of(runner).publish("binary", payload)
        await eventually(lambda: len(got) == len(payloads), what="every payload")
    assert got == payloads


@pytest.mark.parametrize("backend", BACKENDS)
async def test_no_responder_fails_at_once_and_a_timeout_names_the_channel(
    backend: str, request: pytest.FixtureRequest
) -> None:
    release = asyncio.Event()

    @on("slow")
    async def slow(msg: Message, ctx: Context) -> str:
        await release.wait()
        return msg.text

    async with serving(backend, [slow], request) as runner:
        bus = bus_of(runner)
        # A timeout of a minute: only PUBLISH's count of 0 can end this one early.
        with pytest.raises(NoResponderError, match="'nobody'"):
            await asyncio.wait_for(bus.request("nobody", "x", timeout=60), 30)
        with pytest.raises(RequestTimeoutError) as timed_out:
            await bus.request("slow", "first", timeout=0.2)
        assert isinstance(timed_out.value, TimeoutError)
        assert str(timed_out.value) == "no reply on 'slow' within 0.2s"
        stats = runner.stats.requests
        assert (stats.no_responder, stats.timeouts) == (1, 1)
        # The late reply to "first" is dropped and counted, never given to the next request.
        release.set()
        await eventually(lambda: stats.late_replies == 1, what="the late reply")
        assert (await bus.request("slow", "second", timeout=10)).text == "second"
        assert stats.late_replies == 1


@pytest.mark.parametrize("backend", BACKENDS)
async def test_errors_travel_as_type_and_message_without_traceback(
    backend: str, request: pytest.FixtureRequest
) -> None:
    @on("fails")
    async def fails(msg: Message, ctx: Context) -> None:
        secret = "local variable"  # noqa: F841 - must never travel
        raise KeyError("no rate for XXXYYY")

    @on("rejects")
    async def rejects(msg: Message, ctx: Context) -> None:
        raise Reject("pair not traded")

    async with serving(backend, [fails, rejects], request) as runner:
        bus = bus_of(runner)
        with pytest.raises(RemoteError) as failed:
            await bus.request("fails", "x", timeout=10)
        error = failed.value
        assert not isinstance(error, RemoteRejected)
        assert (error.type_name, error.remote_message) == ("KeyError", "'no rate for XXXYYY'")
        assert str(error) == "the responder on 'fails' failed: KeyError: 'no rate for XXXYYY'"
        assert "Traceback" not in str(error) and "local variable" not in str(error)
        with pytest.raises(RemoteRejected) as rejected:
            await bus.request("rejects", "x", timeout=10)
        assert (rejected.value.type_name, rejected.value.remote_message) == ("Reject", "pair not traded")
        # The failures still take the handler's usual way: counted and dead-lettered.
        await eventually(lambda: runner.stats.handlers["fails"].dead_lettered == 1, what="the dead letter")
        await eventually(lambda: runner.stats.handlers["rejects"].rejected == 1, what="the rejection")
        assert runner.stats.requests.remote_errors == 2


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_retried_request_is_answered_by_its_last_attempt(backend: str, request: pytest.FixtureRequest) -> None:
    attempts: Counter[str] = Counter()

    @on("flaky", retries=2, backoff=0.01)
    async def flaky(msg: Message, ctx: Context) -> str:
        attempts[msg.text] += 1
        if msg.text == "always" or attempts[msg.text] < 2:
            raise ConnectionError(f"attempt {attempts[msg.text]}")
        return f"ok after {attempts[msg.text]}"

    async with serving(backend, [flaky], request) as runner:
        bus = bus_of(runner)
        assert (await bus.request("flaky", "once", timeout=10)).text == "ok after 2"
        with pytest.raises(RemoteError, match="ConnectionError: attempt 3"):
            await bus.request("flaky", "always", timeout=10)
        assert runner.stats.requests.late_replies == 0  # one reply per request: after the last attempt


@pytest.mark.parametrize("backend", BACKENDS)
async def test_keyed_handlers_answer_and_a_reply_that_cannot_be_encoded_travels_as_an_error(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # The reply part settles requests beside the handler's other parts (here, per-key ordering).
    @on("keyed", key=lambda msg: msg.text[:1])
    async def keyed(msg: Message, ctx: Context) -> object:
        return msg.text if msg.text != "unencodable" else object()

    async with serving(backend, [keyed], request) as runner:
        bus = bus_of(runner)
        assert await asyncio.gather(*(bus.request("keyed", t, timeout=10, reply_type=str) for t in "abc")) == [
            "a",
            "b",
            "c",
        ]
        # The handler succeeded (its work is done, nothing to retry); the requester hears why no reply came.
        with pytest.raises(RemoteError, match="PayloadError: cannot publish a object"):
            await bus.request("keyed", "unencodable", timeout=10)
        stats = runner.stats.handlers["keyed"]
        assert (stats.failed, stats.dead_lettered) == (0, 0)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_request_all_gathers_every_responder(backend: str, request: pytest.FixtureRequest) -> None:
    @on("health.ping")
    async def database(msg: Message, ctx: Context) -> dict[str, str]:
        return {"part": "database"}

    @on_pattern("health.*")
    async def cache(msg: Message, ctx: Context) -> dict[str, str]:
        return {"part": "cache"}

    @on("health.ping")
    async def broken(msg: Message, ctx: Context) -> None:
        raise RuntimeError("disk full")

    async with serving(backend, [database, cache, broken], request) as runner:
        bus = bus_of(runner)
        # Until the timeout: every reply; an error among them is raised, or returned when asked.
        with pytest.raises(RemoteError, match="disk full"):
            await bus.request_all("health.ping", {}, timeout=0.5)
        replies = await bus.request_all("health.ping", {}, timeout=0.5, return_exceptions=True)
        errors = [r for r in replies if isinstance(r, RemoteError)]
        assert sorted(r.json()["part"] for r in replies if isinstance(r, Message)) == ["cache", "database"]
        assert [e.remote_message for e in errors] == ["disk full"]
        # With an expected count: as soon as that many arrived (a timeout of a minute is not waited).
        some = await asyncio.wait_for(bus.request_all("health.x", {}, timeout=60, expected=1, reply_type=dict), 30)
        assert some == [{"part": "cache"}]
        with pytest.raises(NoResponderError):
            await bus.request_all("elsewhere", {}, timeout=60)


@pytest.mark.parametrize("backend", BACKENDS)
async def test_handlers_request_through_ctx_and_middleware_sees_requests(
    backend: str, request: pytest.FixtureRequest
) -> None:
    seen: list[tuple[str, bool, Any]] = []

    async def recorder(msg: Message, ctx: Context, call_next: Any) -> Any:
        result = await call_next(msg, ctx)
        seen.append((msg.channel, isinstance(msg, Message), result))
        return result

    @on("double")
    async def double(msg: Message, ctx: Context) -> int:
        return 2 * int(msg.text)

    @on("quadruple")
    async def quadruple(msg: Message, ctx: Context) -> int:
        twice = await ctx.request("double", msg.text, timeout=10, reply_type=int)
        return int(await ctx.request("double", twice, timeout=10, reply_type=int))

    async with serving(backend, [double, quadruple], request, middleware=[recorder]) as runner:
        assert await bus_of(runner).request("quadruple", 5, timeout=10, reply_type=int) == 20
    assert seen == [("double", True, 10), ("double", True, 20), ("quadruple", True, 20)]


async def test_testbus_answers_requests() -> None:
    async with TestBus([rate, echo]) as bus:
        assert await bus.request("rates.get", {"pair": "EURUSD"}, reply_type=Rate) == Rate("EURUSD", 1.25)
        assert [r.data for r in await bus.request_all("echo", b"hi", expected=1)] == [b"hi"]
        with pytest.raises(NoResponderError):
            await bus.request("unknown", b"")


# -- a real server only --------------------------------------------------------------------------


async def test_ten_thousand_concurrent_requests_use_two_connections(redis_server: RedisServer) -> None:
    # eventbus.connect(): one command connection (named "requester" here) and one subscription
    # connection for the replies, however many requests are in flight.
    admin = redis.Redis.from_url(redis_server.url)
    peak: Counter[str] = Counter()
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            names = Counter(client["name"] for client in admin.client_list())
            for name, count in names.items():
                peak[name] = max(peak[name], count)

    async with (
        Runner([echo], url=redis_server.url + "?client_name=responder", **FAST),
        eventbus.connect(redis_server.url + "?client_name=requester") as bus,
    ):
        assert (await bus.request("echo", "warm-up", timeout=30)).data == b"warm-up"
        before = len(admin.client_list())
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            replies = await asyncio.gather(*(bus.request("echo", str(i), timeout=120) for i in range(10_000)))
        finally:
            sampling.set()
            await asyncio.to_thread(sampler.join)
        assert [r.data for r in replies] == [str(i).encode() for i in range(10_000)]
        assert bus.requester is not None and bus.requester.stats.answered == 10_001
    assert peak["requester"] == 1
    # The responder's and the requester's subscription connections, both of this process.
    assert peak[f"eventbus-sub-{os.getpid()}"] == 2
    assert sum(peak.values()) <= before
    admin.close()


@pytest.mark.fault
async def test_a_request_in_flight_fails_clearly_when_the_reply_connection_is_lost(
    own_redis_server: RedisServer,
) -> None:
    release = asyncio.Event()

    @on("held")
    async def held(msg: Message, ctx: Context) -> str:
        await release.wait()
        return "late"

    async with Runner([echo, held], url=own_redis_server.url, **FAST) as runner:
        bus = bus_of(runner)
        pending = asyncio.ensure_future(bus.request("held", "x", timeout=60))
        await eventually(lambda: runner.stats.handlers["held"].backlog() == 1, what="the request in the handler")
        with own_redis_server.client() as admin:
            admin.client_kill_filter(_type="pubsub")
        # Fails at once, not after its minute: its reply would have come on the lost connection.
        with pytest.raises(RequestInterruptedError, match=r"'held'.*reply connection was lost"):
            await asyncio.wait_for(pending, 30)
        release.set()
        # Once resubscribed, requests are answered again.
        await eventually(lambda: runner.stats.reconnects >= 1, what="the reconnect")
        assert (await bus.request("echo", "again", timeout=30)).data == b"again"
        assert runner.stats.requests.interrupted == 1


@pytest.mark.fault
async def test_a_request_never_waits_past_its_timeout_on_a_stuck_or_dead_redis(own_redis_server: RedisServer) -> None:
    async with Runner([echo], url=own_redis_server.url, **FAST) as runner:
        bus = bus_of(runner)
        assert (await bus.request("echo", "up", timeout=30)).data == b"up"
        own_redis_server.pause()  # SIGSTOP: the PUBLISH itself is never answered
        try:
            with pytest.raises((RequestTimeoutError, RequestInterruptedError)):
                await asyncio.wait_for(bus.request("echo", "stuck", timeout=0.5), 20)
        finally:
            own_redis_server.resume()
        own_redis_server.kill()
        with pytest.raises((RequestTimeoutError, RequestInterruptedError)):
            await asyncio.wait_for(bus.request("echo", "down", timeout=0.5), 20)


async def test_connect_opens_its_reply_subscription_at_the_first_request(redis_server: RedisServer) -> None:
    admin = redis.Redis.from_url(redis_server.url)
    async with Runner([echo], url=redis_server.url, **FAST):
        async with eventbus.connect(redis_server.url) as bus:
            await bus.publish("echo", "a plain publish needs no subscription")
            subscribers = sum(1 for c in admin.client_list() if c["name"].startswith("eventbus-sub-"))
            assert subscribers == 1  # the runner's only
            assert (await bus.request("echo", "hi", timeout=30)).text == "hi"
            assert sum(1 for c in admin.client_list() if c["name"].startswith("eventbus-sub-")) == 2
        await eventually(
            lambda: sum(1 for c in admin.client_list() if c["name"].startswith("eventbus-sub-")) == 1,
            what="the reply subscription closed with the publisher",
        )
    admin.close()


# -- the command line ----------------------------------------------------------------------------


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventbus",
        "request",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_request_command(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    release = asyncio.Event()

    @on("fails")
    async def fails(msg: Message, ctx: Context) -> None:
        raise ValueError("bad pair")

    @on("slow")
    async def slow(msg: Message, ctx: Context) -> None:
        await release.wait()

    env = {**subprocess_env, "EVENTBUS_URL": redis_server.url}
    async with Runner([rate, fails, slow], url=redis_server.url, **FAST):
        code, out, err = await run_cli("rates.get", '{"pair": "EURUSD"}', env=env)
        assert (code, out, err) == (0, '{"pair":"EURUSD","rate":1.25}\n', "")
        for args, message in [
            (["nobody", "x"], "eventbus: error: no responder on 'nobody': nothing subscribes to it\n"),
            (["slow", "x", "--timeout", "0.3"], "eventbus: error: no reply on 'slow' within 0.3s\n"),
            (["fails", "x"], "eventbus: error: the responder on 'fails' failed: ValueError: bad pair\n"),
        ]:
            assert await run_cli(*args, env=env) == (1, "", message)
        release.set()


async def test_each_worker_of_a_workers_run_answers(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventbus",
        "run",
        "sample_apps.responder",
        "--workers",
        "2",
        "--url",
        redis_server.url,
        env=subprocess_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    admin = redis.Redis.from_url(redis_server.url)
    try:
        await eventually(lambda: admin.pubsub_numsub("whoami")[0][1] == 2, timeout=60, what="both workers")
        async with eventbus.connect(redis_server.url) as bus:
            replies = await asyncio.wait_for(bus.request_all("whoami", "", timeout=60, expected=2, reply_type=int), 60)
            assert len(set(replies)) == 2  # two processes, one reply each
            assert await bus.request("whoami", "", timeout=30, reply_type=int) in replies  # the first of them
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 60)
        admin.close()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_handlers_of_one_channel_count_their_attempts_apart(backend: str, request: pytest.FixtureRequest) -> None:
    # The handlers of a channel share the message object; each retries and replies on its own.
    failed: set[str] = set()

    def once(name: str) -> Any:
        @on("shared", name=name, retries=1, backoff=0.01)
        async def handler(msg: Message, ctx: Context) -> str:
            if name not in failed:
                failed.add(name)
                raise ConnectionError(f"{name} once")
            return name

        return handler

    async with serving(backend, [once("first"), once("second")], request) as runner:
        replies = await bus_of(runner).request_all("shared", "x", timeout=30, expected=2, reply_type=str)
    assert sorted(replies) == ["first", "second"]


async def test_closing_the_publisher_ends_its_waiting_requests(redis_server: RedisServer) -> None:
    release = asyncio.Event()

    @on("held")
    async def held(msg: Message, ctx: Context) -> None:
        await release.wait()

    async with Runner([held], url=redis_server.url, **FAST) as runner:
        bus = eventbus.connect(redis_server.url)
        pending = asyncio.ensure_future(bus.request("held", "x", timeout=60))
        await eventually(lambda: runner.stats.handlers["held"].backlog() == 1, what="the request in the handler")
        await bus.aclose()
        with pytest.raises(RequestInterruptedError, match="the publisher was closed"):
            await asyncio.wait_for(pending, 30)
        release.set()


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_recoverable_channel_answers_requests_and_keeps_its_history_to_published_messages(
    backend: str, request: pytest.FixtureRequest
) -> None:
    # Both envelopes start with a NUL byte: a request must not be taken for a recoverable
    # channel's message, nor a recoverable message for a request.
    quotes = eventbus.Channel("quotes.rec", history=100)
    seen: list[bytes] = []

    @on(quotes)
    async def quote(msg: Message, ctx: Context) -> bytes:
        seen.append(msg.data)
        return b"quoted " + msg.data

    async with serving(backend, [quote], request) as runner:
        bus = bus_of(runner)
        await bus.publish(quotes, b"kept")
        assert (await bus.request("quotes.rec", b"asked")).data == b"quoted asked"
        await bus.publish(quotes, b"kept too")
        await eventually(lambda: len(seen) == 3, what="three messages handled")
        assert seen == [b"kept", b"asked", b"kept too"]
        # The request went by plain PUBLISH: answered, not in the history, counted as such.
        recovery = runner.stats.channels["quotes.rec"]
        assert (recovery.foreign, recovery.unrecovered, recovery.duplicates) == (1, 0, 0)
