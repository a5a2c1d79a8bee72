"""The tutorial's listeners as consumer groups on the purchases stream, with idempotent effects.

Each handler is its own group (named after it), so every listener sees every purchase once, and
the worker processes running this module share each group's entries. An entry carries the whole
order, so each listener takes it typed (``order: Order``); an entry that is not a valid order is
dead-lettered. An entry may be delivered again (its worker died before XACK): the Lua scripts below
make the analytics apply an order once.
"""

from __future__ import annotations

import os

from apps.olympics.keys import (
    HISTOGRAM,
    OPENING_CEREMONY,
    SALES_SUMMARY,
    event_histogram_key,
    invoices_key,
    sales_key,
)
from apps.olympics.orders import Order, format_amount
from apps.olympics_streams.producer import PURCHASES_STREAM
from eventbus import Batch, Context, on_startup, on_stream

CLAIM_IDLE = float(os.environ.get("OLYMPICS_STREAMS_CLAIM_IDLE", "30"))
MARKER_TTL = 7 * 24 * 3600  # longer than any redelivery can take

# KEYS: marker, histogram, event histogram. ARGV: hour, qty, marker ttl.
SALES_SCRIPT = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('BITFIELD', KEYS[2], 'OVERFLOW', 'SAT', 'INCRBY', 'u32', '#' .. ARGV[1], ARGV[2])
redis.call('BITFIELD', KEYS[3], 'OVERFLOW', 'SAT', 'INCRBY', 'u32', '#' .. ARGV[1], ARGV[2])
return 1
"""

# KEYS: marker, sales:<event>, sales_summary. ARGV: id, sales field, cost, tickets field, qty, ttl.
EVENTS_SCRIPT = """
if not redis.call('SET', KEYS[1], 1, 'NX', 'EX', ARGV[6]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('HINCRBYFLOAT', KEYS[3], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[3], ARGV[4], ARGV[5])
return 1
"""


def marker(listener: str, order: Order) -> str:
    return f"olympics:applied:{listener}:{order.id}"


@on_startup
async def load_scripts(ctx: Context) -> None:
    ctx.state["sales_script"] = ctx.redis.register_script(SALES_SCRIPT)
    ctx.state["events_script"] = ctx.redis.register_script(EVENTS_SCRIPT)


@on_stream(PURCHASES_STREAM, claim_idle=CLAIM_IDLE, concurrency=8)
async def sales_analytics(order: Order, ctx: Context) -> None:
    """Tickets sold per UTC hour of day, over all events and per event (u32 counters, see apps.olympics)."""
    keys = [marker("sales_analytics", order), HISTOGRAM, event_histogram_key(order.event)]
    await ctx.state["sales_script"](keys=keys, args=[order.hour, order.qty, MARKER_TTL])


@on_stream(PURCHASES_STREAM, claim_idle=CLAIM_IDLE, concurrency=8)
async def events_analytics(order: Order, ctx: Context) -> None:
    """The orders of each event, and its sales and ticket totals."""
    keys = [marker("events_analytics", order), sales_key(order.event), SALES_SUMMARY]
    args = [
        order.id,
        f"{order.event}:total_sales",
        format_amount(order.cost),
        f"{order.event}:total_tickets_sold",
        order.qty,
        MARKER_TTL,
    ]
    await ctx.state["events_script"](keys=keys, args=args)


@on_stream(PURCHASES_STREAM, claim_idle=CLAIM_IDLE, batch=Batch(max_size=200, max_wait=0.05))
async def customer_purchases(orders: list[Order], ctx: Context) -> None:
    """Each customer's orders, a batch of entries at a time; SADD is idempotent, so a redelivery
    changes nothing."""
    async with ctx.redis.pipeline(transaction=False) as pipe:
        for order in orders:
            pipe.sadd(invoices_key(order.who), order.id)
        await pipe.execute()


@on_stream(PURCHASES_STREAM, claim_idle=CLAIM_IDLE)
async def opening_ceremony_alerter(order: Order, ctx: Context) -> None:
    """Every Opening Ceremony purchase, alerted once (the marker is set before printing)."""
    if order.event == OPENING_CEREMONY and await ctx.redis.set(marker("opening", order), 1, nx=True, ex=MARKER_TTL):
        alert(f"===> Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


@on_stream(PURCHASES_STREAM, claim_idle=CLAIM_IDLE)
async def ceremony_alerter(order: Order, ctx: Context) -> None:
    """Every ceremony purchase (the pub/sub variant's pattern ``purchase_orders:* Ceremony``)."""
    if order.event.endswith(" Ceremony") and await ctx.redis.set(marker("ceremony", order), 1, nx=True, ex=MARKER_TTL):
        alert(f"Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


def alert(line: str) -> None:
    print(line, flush=True)
