"""The five listeners of the tutorial, as eventbus handlers.

A purchase is announced by its order id, on ``purchase_orders`` and on
``purchase_orders:<event>``. Each listener takes the ids in batches (up to 500, or whatever
arrived within 50 ms), reads the orders back from Redis in one round trip, adds the batch up and
writes its totals in another, or prints the alerts.

The analytics and the Opening Ceremony alerter resume after a restart (``resume=True``, named so
that their position outlives a rename): what was announced while they were stopped is processed
when they start again.

An order whose hash is missing or malformed is refused with ``Reject``: eventbus logs it, counts it
and keeps it in the dead-letter stream, and the listener goes on with the rest of the batch. A key
the listener writes that holds another type of value refuses the batch, with a reason naming the key.
"""

from __future__ import annotations

from collections import Counter, defaultdict

from apps.olympics.keys import CEREMONY_PATTERN, OPENING_CEREMONY, ORDERS, orders_of
from apps.olympics.orders import Order, format_amount
from apps.olympics.store import app_keys, count_tickets, load_orders, refusing_wrong_types
from eventbus import Batch, BatchFailed, Context, on, on_pattern

PURCHASES = Batch(max_size=500, max_wait=0.05)


@on(ORDERS, batch=PURCHASES, name="sales_analytics", resume=True)
async def sales_analytics(order_ids: list[str], ctx: Context) -> None:
    """Tickets sold per UTC hour of day, over all events and per event."""
    orders, refused = await load_orders(order_ids, ctx)
    keys = app_keys(ctx)
    tickets: dict[str, Counter[int]] = defaultdict(Counter)  # histogram -> hour -> tickets
    for order in orders:
        tickets[keys.histogram][order.hour] += order.qty
        tickets[keys.event_histogram(order.event)][order.hour] += order.qty
    with refusing_wrong_types(*tickets):
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for histogram, per_hour in tickets.items():
                count_tickets(pipe, histogram, per_hour)
            await pipe.execute()
    if refused:
        raise BatchFailed(refused)


@on(ORDERS, batch=PURCHASES, name="events_analytics", resume=True)
async def events_analytics(order_ids: list[str], ctx: Context) -> None:
    """The orders of each event, and its sales and ticket totals."""
    orders, refused = await load_orders(order_ids, ctx)
    keys = app_keys(ctx)
    order_ids_of: dict[str, list[str]] = defaultdict(list)
    sales: dict[str, float] = defaultdict(float)
    tickets: Counter[str] = Counter()
    for order in orders:
        order_ids_of[order.event].append(order.id)
        sales[order.event] += order.cost
        tickets[order.event] += order.qty
    summary = keys.sales_summary
    with refusing_wrong_types(summary, *map(keys.sales, order_ids_of)):
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for event, ids in order_ids_of.items():
                pipe.sadd(keys.sales(event), *ids)
                pipe.hincrbyfloat(summary, f"{event}:total_sales", sales[event])
                pipe.hincrby(summary, f"{event}:total_tickets_sold", tickets[event])
            await pipe.execute()
    if refused:
        raise BatchFailed(refused)


@on(ORDERS, batch=PURCHASES, name="customer_purchases", resume=True)
async def customer_purchases(order_ids: list[str], ctx: Context) -> None:
    """Each customer's orders, for invoicing (a set: an order added twice is there once)."""
    orders, refused = await load_orders(order_ids, ctx)
    keys = app_keys(ctx)
    order_ids_of: dict[str, list[str]] = defaultdict(list)
    for order in orders:
        order_ids_of[order.who].append(order.id)
    with refusing_wrong_types(*map(keys.invoices, order_ids_of)):
        async with ctx.redis.pipeline(transaction=False) as pipe:
            for who, ids in order_ids_of.items():
                pipe.sadd(keys.invoices(who), *ids)
            await pipe.execute()
    if refused:
        raise BatchFailed(refused)


@on(orders_of(OPENING_CEREMONY), batch=PURCHASES, name="opening_ceremony_alerter", resume=True)
async def opening_ceremony_alerter(order_ids: list[str], ctx: Context) -> None:
    """Every Opening Ceremony purchase, from its exact channel."""
    orders, refused = await load_orders(order_ids, ctx)
    for order in orders:
        alert(f"===> Purchase {describe(order)}")
    if refused:
        raise BatchFailed(refused)


@on_pattern(CEREMONY_PATTERN, batch=PURCHASES)
async def ceremony_alerter(order_ids: list[str], ctx: Context) -> None:
    """Every ceremony purchase, from the pattern: with the exact alerter above, an Opening
    Ceremony order is announced twice, once per subscription (Redis Pub/Sub semantics).

    A pattern matches channels that may not exist yet (any future ``... Ceremony``), so it has
    no position to resume from: purchases announced while the app was stopped are not alerted
    here (the Opening Ceremony alerter above does alert its own)."""
    orders, refused = await load_orders(order_ids, ctx)
    for order in orders:
        alert(f"Purchase {describe(order)}")
    if refused:
        raise BatchFailed(refused)


def describe(order: Order) -> str:
    return f"{order.event}: #{order.qty} ${format_amount(order.cost)}"


def alert(line: str) -> None:
    # Alerts are the app's output, on stdout (eventbus logs to stderr), flushed so that they show
    # as they happen even when stdout is a pipe.
    print(line, flush=True)
