"""The producer side: create events and post purchase orders.

``bus`` is anything with a Redis command client at ``.redis`` and an ``async publish(channel,
data)``: the publisher from ``eventbus.connect()`` in a producer service, or a handler's (or
hook's) ``ctx`` inside an eventbus app.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Protocol

from apps.olympics.keys import ORDERS, ORDERS_CHANNEL, TUTORIAL_KEYS, Keys, orders_of
from apps.olympics.orders import Order, format_amount
from eventbus import Channel


class Bus(Protocol):
    redis: Any

    async def publish(self, channel: str | Channel, data: Any) -> int: ...


async def create_event(bus: Bus, name: str, *, price: float, keys: Keys = TUTORIAL_KEYS) -> None:
    """Register an event (``event:<name>`` hash and the ``events`` set) so reports list it.

    ``keys``: the key names to write (default: the tutorial's; the demo may use a prefix)."""
    if not name or ":" in name:
        # The name becomes part of channel and key names: a ':' would make them ambiguous.
        raise ValueError(f"event name must be non-empty and without ':', got {name!r}")
    await bus.redis.hset(keys.event(name), mapping={"name": name, "price": format_amount(price)})
    await bus.redis.sadd(keys.events, name)


async def post_purchase(bus: Bus, order: Order, *, keys: Keys = TUTORIAL_KEYS) -> int:
    """Store the order, then announce its id on ``purchase_orders`` and ``purchase_orders:<event>``.

    The hash is written before anything is published, so a listener never looks up an order that
    is not there yet. Both channels keep a history, so listeners that were stopped for a restart
    process the order when they are back. Returns the number of receptions (Redis PUBLISH
    semantics): 0 means no listener was subscribed at that moment. ``keys`` must be the
    listeners' (a prefix stores the hash where they look it up).
    """
    await bus.redis.hset(keys.order(order.id), mapping=order.fields())
    receptions = await asyncio.gather(bus.publish(ORDERS, order.id), bus.publish(orders_of(order.event), order.id))
    return sum(receptions)


async def wait_for_listeners(
    redis: Any, timeout: float, *, channels: Sequence[str] = (ORDERS_CHANNEL,), patterns: int = 0
) -> bool:
    """Wait until every channel in ``channels`` has a subscriber and the server counts at least
    ``patterns`` pattern subscriptions; False if ``timeout`` passed first.

    Pub/Sub drops messages nobody is subscribed to, so a producer that starts before its
    listeners would lose its first orders.
    """
    deadline = time.monotonic() + timeout
    while True:
        counts = await redis.pubsub_numsub(*channels)
        subscribed = all(int(count) > 0 for _, count in counts) and len(counts) == len(channels)
        if subscribed and (patterns == 0 or int(await redis.pubsub_numpat()) >= patterns):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.05)
