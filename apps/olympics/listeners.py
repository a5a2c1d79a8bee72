"""The five listeners of the tutorial, as eventbus handlers.

A purchase is announced by its order id, on ``purchase_orders`` and on
``purchase_orders:<event>``. Each listener reads the order back from Redis and keeps its own
analytics, or prints an alert.

An order whose hash is missing or malformed is refused with ``Reject``: eventbus logs it, counts it
and keeps it in the dead-letter stream, and the listener goes on with the next one. So is an order
whose key, or a key a listener writes, holds another type of value: the reason names the key.
"""

from __future__ import annotations

from apps.olympics.keys import CEREMONY_PATTERN, OPENING_CEREMONY, ORDERS_CHANNEL, event_channel
from apps.olympics.orders import Order, format_amount
from apps.olympics.store import app_keys, count_tickets, load_order, refusing_wrong_types
from eventbus import Context, on, on_pattern


@on(ORDERS_CHANNEL, concurrency=16)
async def sales_analytics(order_id: str, ctx: Context) -> None:
    """Tickets sold per UTC hour of day, over all events and per event."""
    order = await load_order(order_id, ctx)
    keys = app_keys(ctx)
    histograms = (keys.histogram, keys.event_histogram(order.event))
    with refusing_wrong_types(*histograms):
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for histogram in histograms:
                count_tickets(pipe, histogram, order)
            await pipe.execute()


@on(ORDERS_CHANNEL, concurrency=16)
async def events_analytics(order_id: str, ctx: Context) -> None:
    """The orders of each event, and its sales and ticket totals."""
    order = await load_order(order_id, ctx)
    keys = app_keys(ctx)
    sales, summary = keys.sales(order.event), keys.sales_summary
    with refusing_wrong_types(sales, summary):
        async with ctx.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(sales, order.id)
            pipe.hincrbyfloat(summary, f"{order.event}:total_sales", order.cost)
            pipe.hincrby(summary, f"{order.event}:total_tickets_sold", order.qty)
            await pipe.execute()


@on(ORDERS_CHANNEL, concurrency=16)
async def customer_purchases(order_id: str, ctx: Context) -> None:
    """Each customer's orders, for invoicing."""
    order = await load_order(order_id, ctx)
    invoices = app_keys(ctx).invoices(order.who)
    with refusing_wrong_types(invoices):
        await ctx.redis.sadd(invoices, order.id)


@on(event_channel(OPENING_CEREMONY), concurrency=16)
async def opening_ceremony_alerter(order_id: str, ctx: Context) -> None:
    """Every Opening Ceremony purchase, from its exact channel."""
    order = await load_order(order_id, ctx)
    alert(f"===> Purchase {describe(order)}")


@on_pattern(CEREMONY_PATTERN, concurrency=16)
async def ceremony_alerter(order_id: str, ctx: Context) -> None:
    """Every ceremony purchase, from the pattern: with the exact alerter above, an Opening
    Ceremony order is announced twice, once per subscription (Redis Pub/Sub semantics)."""
    order = await load_order(order_id, ctx)
    alert(f"Purchase {describe(order)}")


def describe(order: Order) -> str:
    return f"{order.event}: #{order.qty} ${format_amount(order.cost)}"


def alert(line: str) -> None:
    # Alerts are the app's output, on stdout (eventbus logs to stderr), flushed so that they show
    # as they happen even when stdout is a pipe.
    print(line, flush=True)
