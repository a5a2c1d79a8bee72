"""eventbus.testing as a user would use it on their own handler module."""

from __future__ import annotations

import pytest

from eventbus import Context, Message, Reject, on
from eventbus.testing import TestBus


async def test_run_a_module_in_memory() -> None:
    async with TestBus("tests.sample_apps.orders") as bus:
        assert await bus.redis.get("sample:started") == b"1"
        assert await bus.publish("purchase_orders", "42") == 1
        assert await bus.publish("purchase_orders:Opening Ceremony", "7") == 2
        await bus.drain()
        assert await bus.redis.get("orders_seen") == b"1"
        assert await bus.redis.lrange("ceremony", 0, -1) == [
            b"purchase_orders:Opening Ceremony|purchase_orders:* Ceremony|7"
        ]
        assert bus.state["opening"] == ["7"]
        assert bus.handler_stats("count").handled == 1


async def test_dead_letters_are_inspectable() -> None:
    @on("in")
    async def refuse(msg: Message, ctx: Context) -> None:
        raise Reject("no thanks")

    async with TestBus([refuse]) as bus:
        await bus.publish("in", {"id": 1})
        await bus.drain()
        letters = await bus.dead_letters()
    assert [(d.handler, d.payload, d.error) for d in letters] == [("refuse", b'{"id":1}', "rejected: no thanks")]


async def test_ctx_redis_publish_reaches_subscribers() -> None:
    seen: list[bytes] = []

    @on("first")
    async def forward(msg: Message, ctx: Context) -> None:
        await ctx.redis.publish("second", msg.data)

    @on("second")
    async def record(msg: Message, ctx: Context) -> None:
        seen.append(msg.data)

    async with TestBus([forward, record]) as bus:
        await bus.publish("first", "x")
        await bus.drain()
        await bus.drain()
    assert seen == [b"x"]


async def test_drain_times_out_with_the_busy_handler_named() -> None:
    import asyncio

    @on("slow")
    async def slow(msg: Message, ctx: Context) -> None:
        await asyncio.sleep(10)

    async with TestBus([slow], grace=0.1) as bus:
        await bus.publish("slow", 1)
        with pytest.raises(TimeoutError, match="slow"):
            await bus.drain(timeout=0.1)
