"""The olympics listeners tuned per message, as apps/olympics shipped them before batch handlers:
kept to compare with the app as a user writes it (``python -m benchmarks.olympics.ablation``).

Each one reads the order hash itself (the message carries only the id), then sends its writes
together in one ``pipeline(transaction=False)`` and awaits them once. That costs no extra round
trips where it matters: every listener works on several orders at once (``concurrency``), and
eventbus's command client sends all the commands issued in one loop turn, by every handler, in
one round trip; its plain pipelines ride the same shared batches. With two steps each (read,
write) instead of two to four, the listeners stay in step through a backlog, so the
``purchase_orders`` listeners' reads of one order coalesce (below): per purchase 7.8 commands and
0.14 round trips instead of 9.8 and 0.32 (``python -m benchmarks.olympics.roundtrips``, see
benchmarks/PROFILE.md). Gathering the writes instead would cost a task per command. The writes
are increments and set
additions, which give the same result in any order, and alerts need no strict order either.
They were never atomic: as before, a write that fails leaves the listener's others applied,
except that now the writes after a failed one still run (Redis would not roll them back in a
``MULTI`` either).

When listeners read the same order in the same loop turn (in a backlog, the three on
``purchase_orders``; at a steady rate, all five), eventbus's command client sends that ``HGETALL``
once and gives each its own copy of the reply (read coalescing).

The inboxes are large so that a burst of purchases is absorbed rather than dropped: a dropped
message is a sale missing from the analytics (eventbus counts and logs any drop).

An order whose hash is missing or malformed is refused with ``Reject``: eventbus logs it,
counts it and keeps it in the dead-letter stream, and the listener goes on with the next one.
So is an order whose key, or a key a listener writes, already exists holding another type of
value (Redis's WRONGTYPE): the reason names the key, which is someone else's data to look at.

The key names come from ``ctx.state`` (:func:`~apps.olympics.keys.keys_in_use`): the tutorial's,
unless the demo chose a prefix of its own for its invented data.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from redis.exceptions import ResponseError

from apps.olympics.keys import (
    CEREMONY_PATTERN,
    OPENING_CEREMONY,
    ORDERS_CHANNEL,
    TOTAL_SALES,
    TOTAL_TICKETS,
    event_channel,
    keys_in_use,
    summary_field,
)
from apps.olympics.orders import InvalidOrder, Order, format_amount, parse_order
from eventbus import Context, Message, Reject, on, on_pattern

CONCURRENCY = 16
# Inboxes keep eventbus's default memory budget: order ids are tiny, so it holds over a million.
OPTIONS: dict[str, Any] = {"concurrency": CONCURRENCY}


async def load_order(msg: Message, ctx: Context) -> Order:
    """The order a message announces; Reject if its id or its hash is unusable."""
    order_id = msg.text
    if not order_id:
        raise Reject(f"empty order id on {msg.channel!r}")
    key = keys_in_use(ctx.state).order(order_id)
    try:  # as ``with writing(key, "read")``, without a context manager object per message
        raw = await ctx.redis.hgetall(key)
    except ResponseError as exc:
        if wrongtype(exc):
            raise writing(key, "read").reject() from None
        raise
    try:
        return parse_order(order_id, raw)
    except InvalidOrder as exc:
        raise Reject(str(exc)) from None


def count_tickets(pipe: Any, key: str, order: Order) -> None:
    """Queue on ``pipe`` the addition of the order's tickets to its UTC hour's counter in the
    histogram ``key``.

    24 unsigned 32-bit counters addressed by index (``#hour``), so bucket ``h`` is bytes
    4h..4h+3 and the key is 96 bytes. The tutorial used u8, which wraps to 0 after 255 tickets in
    an hour, and offsets ``(hour+1)*8`` that wasted the first byte. u32 holds 4 billion tickets an
    hour, and OVERFLOW SAT makes a counter that ever reaches the limit stay pegged at its maximum
    (visibly full) instead of wrapping to a small, plausible-looking wrong number.
    """
    pipe.execute_command("BITFIELD", key, "OVERFLOW", "SAT", "INCRBY", "u32", f"#{order.hour}", order.qty)


async def write_all(pipe: Any, keys: Sequence[str]) -> None:
    """Send the writes queued on ``pipe`` (one per key of ``keys``, in order) and raise the first
    error as :func:`writing` would for its key."""
    replies = await pipe.execute(raise_on_error=False)
    for key, reply in zip(keys, replies, strict=True):
        if isinstance(reply, ResponseError):
            with writing(key):
                raise reply


class writing:  # lower case: used like the function it replaced, ``with writing(key):``
    """Turn Redis's WRONGTYPE into a dead letter that names the key, instead of a traceback.

    It is not retried: the key stays of the wrong type until someone renames or deletes it. (A
    class rather than ``@contextmanager``: it wraps every read, and a generator costs more.)
    """

    __slots__ = ("action", "key")

    def __init__(self, key: str, action: str = "update") -> None:
        self.key = key
        self.action = action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if wrongtype(exc):
            raise self.reject() from None

    def reject(self) -> Reject:
        return Reject(
            f"cannot {self.action} {self.key!r}: the key exists and holds another type of value (WRONGTYPE), so it "
            "is not this app's data; rename or delete it (the demo keeps its own data under a prefix)"
        )


def wrongtype(exc: BaseException | None) -> bool:
    """Whether ``exc`` is Redis's WRONGTYPE error."""
    return isinstance(exc, ResponseError) and str(exc).startswith("WRONGTYPE")


@on(ORDERS_CHANNEL, **OPTIONS)
async def sales_analytics(msg: Message, ctx: Context) -> None:
    """Tickets sold per UTC hour of day, over all events and per event."""
    order = await load_order(msg, ctx)
    keys = keys_in_use(ctx.state)
    written = (keys.histogram, keys.event_histogram(order.event))
    pipe = ctx.redis.pipeline(transaction=False)
    for key in written:
        count_tickets(pipe, key, order)
    await write_all(pipe, written)


@on(ORDERS_CHANNEL, **OPTIONS)
async def events_analytics(msg: Message, ctx: Context) -> None:
    """The orders of each event, and its sales and ticket totals."""
    order = await load_order(msg, ctx)
    keys = keys_in_use(ctx.state)
    sales, summary = keys.sales(order.event), keys.sales_summary
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.sadd(sales, order.id)
    pipe.hincrbyfloat(summary, summary_field(order.event, TOTAL_SALES), order.cost)
    pipe.hincrby(summary, summary_field(order.event, TOTAL_TICKETS), order.qty)
    await write_all(pipe, (sales, summary, summary))


@on(ORDERS_CHANNEL, **OPTIONS)
async def customer_purchases(msg: Message, ctx: Context) -> None:
    """Each customer's orders, for invoicing."""
    order = await load_order(msg, ctx)
    key = keys_in_use(ctx.state).invoices(order.who)
    try:  # as ``with writing(key)``, without a context manager object per message
        await ctx.redis.sadd(key, order.id)
    except ResponseError as exc:
        if wrongtype(exc):
            raise writing(key).reject() from None
        raise


@on(event_channel(OPENING_CEREMONY), **OPTIONS)
async def opening_ceremony_alerter(msg: Message, ctx: Context) -> None:
    """Every Opening Ceremony purchase, from its exact channel."""
    order = await load_order(msg, ctx)
    alert(f"===> Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


@on_pattern(CEREMONY_PATTERN, **OPTIONS)
async def ceremony_alerter(msg: Message, ctx: Context) -> None:
    """Every ceremony purchase, from the pattern: with the exact alerter above, an Opening
    Ceremony order is announced twice, once per subscription (Redis Pub/Sub semantics)."""
    order = await load_order(msg, ctx)
    alert(f"Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


def alert(line: str) -> None:
    # Alerts are the app's output, on stdout; eventbus logs go to stderr. Flushed at once so they
    # show as they happen even when stdout is a pipe.
    print(line, file=sys.stdout, flush=True)
