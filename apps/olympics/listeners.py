"""The five listeners of the tutorial, as eventbus handlers.

Each one reads the order hash itself (the message carries only the id) and sends its writes in
one pipeline, so a purchase costs each analytics listener two round trips. The analytics
listeners work on several orders at once: their writes are increments and set additions, which
give the same result in any order.

An order whose hash is missing or malformed is refused with ``Reject``: eventbus logs it,
counts it and keeps it in the dead-letter stream, and the listener goes on with the next one.
"""

from __future__ import annotations

import sys
from typing import Any

from apps.olympics.keys import (
    CEREMONY_PATTERN,
    HISTOGRAM,
    OPENING_CEREMONY,
    ORDERS_CHANNEL,
    SALES_SUMMARY,
    TOTAL_SALES,
    TOTAL_TICKETS,
    event_channel,
    event_histogram_key,
    invoices_key,
    order_key,
    sales_key,
    summary_field,
)
from apps.olympics.orders import InvalidOrder, Order, format_amount, parse_order
from eventbus import Context, Message, Reject, on, on_pattern

ANALYTICS_CONCURRENCY = 8


async def load_order(msg: Message, ctx: Context) -> Order:
    """The order a message announces; Reject if its id or its hash is unusable."""
    order_id = msg.text
    if not order_id:
        raise Reject(f"empty order id on {msg.channel!r}")
    raw = await ctx.redis.hgetall(order_key(order_id))
    try:
        return parse_order(order_id, raw)
    except InvalidOrder as exc:
        raise Reject(str(exc)) from None


def count_tickets(pipe: Any, key: str, order: Order) -> None:
    """Add the order's tickets to its UTC hour's counter in the histogram ``key``.

    24 unsigned 32-bit counters addressed by index (``#hour``), so bucket ``h`` is bytes
    4h..4h+3 and the key is 96 bytes. The tutorial used u8, which wraps to 0 after 255 tickets in
    an hour, and offsets ``(hour+1)*8`` that wasted the first byte. u32 holds 4 billion tickets an
    hour, and OVERFLOW SAT makes a counter that ever reaches the limit stay pegged at its maximum
    (visibly full) instead of wrapping to a small, plausible-looking wrong number.
    """
    pipe.execute_command("BITFIELD", key, "OVERFLOW", "SAT", "INCRBY", "u32", f"#{order.hour}", order.qty)


@on(ORDERS_CHANNEL, concurrency=ANALYTICS_CONCURRENCY)
async def sales_analytics(msg: Message, ctx: Context) -> None:
    """Tickets sold per UTC hour of day, over all events and per event."""
    order = await load_order(msg, ctx)
    pipe = ctx.redis.pipeline(transaction=False)
    count_tickets(pipe, HISTOGRAM, order)
    count_tickets(pipe, event_histogram_key(order.event), order)
    await pipe.execute()


@on(ORDERS_CHANNEL, concurrency=ANALYTICS_CONCURRENCY)
async def events_analytics(msg: Message, ctx: Context) -> None:
    """The orders of each event, and its sales and ticket totals."""
    order = await load_order(msg, ctx)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.sadd(sales_key(order.event), order.id)
    pipe.hincrbyfloat(SALES_SUMMARY, summary_field(order.event, TOTAL_SALES), order.cost)
    pipe.hincrby(SALES_SUMMARY, summary_field(order.event, TOTAL_TICKETS), order.qty)
    await pipe.execute()


@on(ORDERS_CHANNEL, concurrency=ANALYTICS_CONCURRENCY)
async def customer_purchases(msg: Message, ctx: Context) -> None:
    """Each customer's orders, for invoicing."""
    order = await load_order(msg, ctx)
    await ctx.redis.sadd(invoices_key(order.who), order.id)


@on(event_channel(OPENING_CEREMONY))
async def opening_ceremony_alerter(msg: Message, ctx: Context) -> None:
    """Every Opening Ceremony purchase, from its exact channel."""
    order = await load_order(msg, ctx)
    alert(f"===> Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


@on_pattern(CEREMONY_PATTERN)
async def ceremony_alerter(msg: Message, ctx: Context) -> None:
    """Every ceremony purchase, from the pattern: with the exact alerter above, an Opening
    Ceremony order is announced twice, once per subscription (Redis Pub/Sub semantics)."""
    order = await load_order(msg, ctx)
    alert(f"Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


def alert(line: str) -> None:
    # Alerts are the app's output, on stdout; eventbus logs go to stderr. Flushed at once so they
    # show as they happen even when stdout is a pipe.
    print(line, file=sys.stdout, flush=True)
