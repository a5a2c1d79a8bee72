"""Reading orders back from Redis and writing the analytics: what the listeners share.

The key names come from :func:`app_keys`: the tutorial's, unless the demo keeps its invented data
under a prefix of its own (see apps.olympics.demo).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from redis.exceptions import ResponseError

from apps.olympics.keys import Keys, keys_in_use
from apps.olympics.orders import InvalidOrder, Order, parse_order
from eventbus import Context, Reject


def app_keys(ctx: Context) -> Keys:
    """The key names the listeners read and write."""
    return keys_in_use(ctx.state)


async def load_orders(order_ids: list[str], ctx: Context) -> tuple[list[Order], dict[int, Exception]]:
    """The orders these purchases announce, read in one round trip, and the ones refused (by
    their position in ``order_ids``: a ``Reject`` each, saying why)."""
    keys = app_keys(ctx)
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for order_id in order_ids:
            pipe.hgetall(keys.order(order_id))
        replies = await pipe.execute(raise_on_error=False)
    orders: list[Order] = []
    refused: dict[int, Exception] = {}
    for position, (order_id, reply) in enumerate(zip(order_ids, replies, strict=True)):
        try:
            orders.append(read_order(order_id, reply, keys.order(order_id)))
        except Reject as exc:
            refused[position] = exc
    return orders, refused


def read_order(order_id: str, reply: Any, key: str) -> Order:
    """An order from its HGETALL reply; Reject if its id or its hash is unusable."""
    if not order_id:
        raise Reject("empty order id")
    if isinstance(reply, Exception):
        with refusing_wrong_types(key, action="read"):
            raise reply
    try:
        return parse_order(order_id, reply)
    except InvalidOrder as exc:
        raise Reject(str(exc)) from None


def count_tickets(redis: Any, histogram: str, tickets_per_hour: Mapping[int, int]) -> Any:
    """Add tickets to the UTC hours' counters in ``histogram``, in one command.

    24 unsigned 32-bit counters addressed by index (``#hour``); OVERFLOW SAT keeps a full counter
    at its maximum instead of wrapping to a small, plausible-looking number.
    """
    increments = [arg for hour, qty in tickets_per_hour.items() for arg in ("INCRBY", "u32", f"#{hour}", qty)]
    return redis.execute_command("BITFIELD", histogram, "OVERFLOW", "SAT", *increments)


@contextmanager
def refusing_wrong_types(*keys: str, action: str = "update") -> Iterator[None]:
    """Turn Redis's WRONGTYPE on one of ``keys`` into a dead letter that names the key.

    It is not retried: the key stays of the wrong type until someone renames or deletes it.
    """
    try:
        yield
    except ResponseError as exc:
        if "WRONGTYPE" not in str(exc):
            raise
        # A pipeline's error says which command failed: name its key rather than every candidate.
        named = [key for key in keys if f" {key} " in f" {exc} "] or list(keys)
        raise Reject(
            f"cannot {action} {' or '.join(map(repr, named))}: the key exists and holds another type of value "
            "(WRONGTYPE), so it is not this app's data; rename or delete it (the demo keeps its own data under a "
            "prefix)"
        ) from None
