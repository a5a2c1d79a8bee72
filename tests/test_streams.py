"""Stream consumer groups against a real redis-server: ack, reclaim, redelivery, dead letters, sharing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from eventbus import Context, LoadError, Runner, StreamMessage, connect, on_stream
from eventbus._payloads import stream_fields
from eventbus._router import Router
from tests.redis_server import RedisServer


async def wait_for(check: Callable[[], Awaitable[bool] | object], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.02)


async def test_entries_are_handled_once_and_acknowledged(redis_server: RedisServer) -> None:
    seen: list[tuple[str, Any, int]] = []

    @on_stream("orders", group="g", block=0.2)
    async def handle(msg: StreamMessage, ctx: Context) -> None:
        seen.append((msg.stream, msg.json() if b"data" not in msg.fields else msg.data, msg.deliveries))

    async with Runner([handle], url=redis_server.url) as runner, connect(redis_server.url) as bus:
        for i in range(50):
            await bus.append("orders", {"n": i})
        await bus.append("orders", b"raw bytes")
        await wait_for(lambda: len(seen) == 51)
        assert runner.stats.handlers["handle"].handled == 51
    assert [s[1] for s in seen[:50]] == [{"n": str(i)} for i in range(50)]
    assert seen[50] == ("orders", b"raw bytes", 1)
    client = aioredis.Redis.from_url(redis_server.url)
    try:
        pending = await client.xpending("orders", "g")
        assert pending["pending"] == 0
        # A consumer that left with nothing pending removed itself from the group.
        assert await client.xinfo_consumers("orders", "g") == []
    finally:
        await client.aclose()


async def test_a_failing_entry_is_redelivered_then_dead_lettered(redis_server: RedisServer) -> None:
    deliveries: list[int] = []

    @on_stream("jobs", group="g", claim_idle=0.2, max_deliveries=3, block=0.2)
    async def flaky(msg: StreamMessage, ctx: Context) -> None:
        deliveries.append(msg.deliveries)
        raise RuntimeError("boom")

    async with Runner([flaky], url=redis_server.url) as runner, connect(redis_server.url) as bus:
        entry_id = await bus.append("jobs", "payload")
        await wait_for(lambda: runner.stats.handlers["flaky"].dead_lettered == 1)
        client = bus.redis
        await wait_for(lambda: _pending(client, "jobs", "g", 0))
        letters = await client.xrange("eventbus:dead-letter")
    assert deliveries == [1, 2, 3]
    assert len(letters) == 1
    fields = letters[0][1]
    assert fields[b"stream"] == b"jobs" and fields[b"entry_id"] == entry_id.encode()
    assert fields[b"deliveries"] == b"3" and fields[b"payload"] == b"payload"
    assert b"RuntimeError: boom" in fields[b"error"]


async def _pending(client: Any, stream: str, group: str, expected: int) -> bool:
    return int((await client.xpending(stream, group))["pending"]) == expected


async def test_entries_left_by_a_dead_consumer_are_claimed(redis_server: RedisServer) -> None:
    got: list[tuple[str, int]] = []

    @on_stream("work", group="g", claim_idle=0.3, block=0.2)
    async def worker(msg: StreamMessage, ctx: Context) -> None:
        got.append((msg.text, msg.deliveries))

    client = aioredis.Redis.from_url(redis_server.url)
    try:
        await client.xgroup_create("work", "g", id="0", mkstream=True)
        for i in range(5):
            await client.xadd("work", {"data": f"e{i}"})
        # A consumer reads them and dies without acknowledging.
        await client.xreadgroup("g", "dead", {"work": ">"}, count=10)
        async with Runner([worker], url=redis_server.url):
            await wait_for(lambda: len(got) == 5)
            await wait_for(lambda: _pending(client, "work", "g", 0))
    finally:
        await client.aclose()
    assert sorted(got) == [(f"e{i}", 2) for i in range(5)]


async def test_consumers_of_one_group_share_the_work(redis_server: RedisServer) -> None:
    by_consumer: dict[str, list[str]] = {"a": [], "b": []}

    def make(consumer: str) -> Any:
        @on_stream("shared", group="g", consumer=consumer, read_count=5, block=0.2, name="h")
        async def h(msg: StreamMessage, ctx: Context) -> None:
            by_consumer[consumer].append(msg.text)
            await asyncio.sleep(0.001)  # let the other consumer get a turn

        return h

    async with (
        Runner([make("a")], url=redis_server.url),
        Runner([make("b")], url=redis_server.url),
        connect(redis_server.url) as bus,
    ):
        for i in range(300):
            await bus.append("shared", str(i))
        await wait_for(lambda: len(by_consumer["a"]) + len(by_consumer["b"]) >= 300)
        await asyncio.sleep(0.1)  # waits for something NOT to happen: a duplicate would arrive now
    handled = by_consumer["a"] + by_consumer["b"]
    assert sorted(handled, key=int) == [str(i) for i in range(300)]  # each entry exactly once
    assert by_consumer["a"] and by_consumer["b"]


async def test_each_group_sees_every_entry(redis_server: RedisServer) -> None:
    counts = {"one": 0, "two": 0}

    @on_stream("fanout", block=0.2)
    async def one(msg: StreamMessage, ctx: Context) -> None:
        counts["one"] += 1

    @on_stream("fanout", block=0.2)
    async def two(msg: StreamMessage, ctx: Context) -> None:
        counts["two"] += 1

    async with Runner([one, two], url=redis_server.url) as runner, connect(redis_server.url) as bus:
        for i in range(20):
            await bus.append("fanout", i, maxlen=1000)
        await wait_for(lambda: counts == {"one": 20, "two": 20})
        groups = {g["name"] for g in await runner.redis.xinfo_groups("fanout")}
    assert groups == {b"one", b"two"}  # the group defaults to the handler's name


def test_two_handlers_in_one_group_are_a_load_error() -> None:
    @on_stream("s", group="g")
    async def a(msg: StreamMessage, ctx: Context) -> None: ...

    @on_stream("s", group="g")
    async def b(msg: StreamMessage, ctx: Context) -> None: ...

    with pytest.raises(LoadError, match="both read stream 's' in group 'g'"):
        Router([a, b])


def test_stream_fields() -> None:
    assert stream_fields({"a": 1, "b": "x"}) == {"a": 1, "b": "x"}
    assert stream_fields([1, 2]) == {"data": b"[1,2]"}
    assert stream_fields("hi") == {"data": b"hi"}
    with pytest.raises(Exception, match="field 'a' is a dict"):
        stream_fields({"a": {}})
