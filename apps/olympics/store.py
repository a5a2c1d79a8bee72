"""Reading orders back from Redis and writing the analytics: what the listeners share.

The key names come from :func:`app_keys`: the tutorial's, unless the demo keeps its invented data
under a prefix of its own (see apps.olympics.demo).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from redis.exceptions import ResponseError

from apps.olympics.keys import Keys, keys_in_use
from apps.olympics.orders import InvalidOrder, Order, parse_order
from eventbus import Context, Reject


def app_keys(ctx: Context) -> Keys:
    """The key names the listeners read and write."""
    return keys_in_use(ctx.state)


async def load_order(order_id: str, ctx: Context) -> Order:
    """The order a purchase announces; Reject if its id or its hash is unusable."""
    if not order_id:
        raise Reject("empty order id")
    key = app_keys(ctx).order(order_id)
    with refusing_wrong_types(key, action="read"):
        fields = await ctx.redis.hgetall(key)
    try:
        return parse_order(order_id, fields)
    except InvalidOrder as exc:
        raise Reject(str(exc)) from None


def count_tickets(redis: Any, histogram: str, order: Order) -> Any:
    """Add the order's tickets to its UTC hour's counter in ``histogram``.

    24 unsigned 32-bit counters addressed by index (``#hour``); OVERFLOW SAT keeps a full counter
    at its maximum instead of wrapping to a small, plausible-looking number.
    """
    return redis.execute_command("BITFIELD", histogram, "OVERFLOW", "SAT", "INCRBY", "u32", f"#{order.hour}", order.qty)


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
