"""Reading orders back from Redis and writing the analytics: what the listeners share.

The key names come from :func:`app_keys`: the tutorial's, unless the demo keeps its invented data
under a prefix of its own (see apps.olympics.demo).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from redis.exceptions import ResponseError, WatchError

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


async def write_once(
    ctx: Context,
    orders: Sequence[Order],
    marks: Callable[[Order], str],
    writes: Mapping[str, str],
    write: Callable[[Any, list[Order]], None],
) -> None:
    """Write what ``orders`` add to totals, counting each order once however often it is announced.

    Each order id goes into the set ``marks(order)``; ``write(pipe, new)`` queues the increments
    for the orders no set held yet, and both happen in one MULTI/EXEC, so an order handled again
    (a producer announcing it twice, a listener restarted after a crash) adds nothing twice.
    ``writes`` names every key written, with its Redis type: a key of another type refuses the
    batch before anything is written. The sets are WATCHed, so two processes counting the same
    order cannot both see it as new (the totals are sums, so they need no WATCH).
    """
    unique = list({order.id: order for order in orders}.values())
    if not unique:
        return
    marked: dict[str, list[Order]] = {}
    for order in unique:
        marked.setdefault(marks(order), []).append(order)
    types = {**dict.fromkeys(marked, "set"), **writes}
    with refusing_wrong_types(*types):
        async with ctx.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(*marked)
                    new = await _not_marked(ctx.redis, marked, types)
                    pipe.multi()  # type: ignore[no-untyped-call, unused-ignore]  # untyped in redis-py
                    for key, members in marked.items():
                        pipe.sadd(key, *(order.id for order in members))
                    write(pipe, new)
                    await pipe.execute()
                    return
                except WatchError:
                    continue  # another process marked one of these orders meanwhile: look again


async def _not_marked(redis: Any, marked: Mapping[str, list[Order]], types: Mapping[str, str]) -> list[Order]:
    """The orders not in their set yet, after checking every key's type; one round trip."""
    async with redis.pipeline(transaction=False) as pipe:
        for key in types:
            pipe.type(key)
        for key, members in marked.items():
            pipe.smismember(key, [order.id for order in members])
        replies = await pipe.execute()
    for (key, wanted), found in zip(types.items(), replies, strict=False):
        found_type = found.decode() if isinstance(found, bytes) else str(found)
        if found_type not in ("none", wanted):
            raise wrong_type([key])
    flags = replies[len(types) :]
    return [
        order
        for members, present in zip(marked.values(), flags, strict=True)
        for order, there in zip(members, present, strict=True)
        if not int(there)
    ]


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
        raise wrong_type(named, action) from None


def wrong_type(keys: Sequence[str], action: str = "update") -> Reject:
    """The refusal of a batch that would write one of ``keys``, which hold another type of value."""
    return Reject(
        f"cannot {action} {' or '.join(map(repr, keys))}: the key exists and holds another type of value "
        "(WRONGTYPE), so it is not this app's data; rename or delete it (the demo keeps its own data under a "
        "prefix)"
    )
