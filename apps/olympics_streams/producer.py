"""Appending purchases to the stream, reusing the pub/sub variant's orders and simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson

from apps.olympics.keys import order_key
from apps.olympics.orders import Order
from apps.olympics.simulator import create_events, generate_orders

PURCHASES_STREAM = "olympics:purchase_orders"


def entry_fields(order: Order) -> dict[str, bytes]:
    """The stream entry carries the whole order as JSON, so listeners take it typed
    (``order: Order``) and need not read the hash back."""
    return {"data": orjson.dumps(order)}


async def post_purchase(redis: Any, order: Order, *, maxlen: int | None = None) -> str:
    """Store the order hash and append the purchase, atomically (MULTI); returns the entry id."""
    pipe = redis.pipeline(transaction=True)
    pipe.hset(order_key(order.id), mapping=order.fields())
    pipe.xadd(PURCHASES_STREAM, entry_fields(order), maxlen=maxlen, approximate=True)
    _, entry_id = await pipe.execute()
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


async def produce(bus: Any, orders: Sequence[Order], *, rate: float = 0.0, concurrency: int = 16) -> int:
    """Create the events, then post ``orders`` at ``rate`` per second (0: as fast as possible)."""
    await create_events(bus)
    loop = asyncio.get_running_loop()
    start = loop.time()
    items = iter(enumerate(orders))
    posted = 0

    async def worker() -> None:
        nonlocal posted
        for i, order in items:
            if rate > 0 and (delay := start + i / rate - loop.time()) > 0:
                await asyncio.sleep(delay)
            await post_purchase(bus.redis, order)
            posted += 1

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return posted


__all__ = ["PURCHASES_STREAM", "entry_fields", "generate_orders", "post_purchase", "produce"]
