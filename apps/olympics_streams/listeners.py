"""The tutorial's listeners as consumer groups on the purchases stream, with idempotent effects.

Each handler is its own group (named after it), so every listener sees every purchase once, and
the worker processes running this module share each group's entries. An entry may be delivered
again (its worker died before XACK): the Lua scripts below make the analytics apply an order once.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from apps.olympics.keys import (
    HISTOGRAM,
    OPENING_CEREMONY,
    SALES_SUMMARY,
    TOTAL_SALES,
    TOTAL_TICKETS,
    event_histogram_key,
    invoices_key,
    sales_key,
    summary_field,
)
from apps.olympics.orders import InvalidOrder, Order, format_amount, parse_order
from apps.olympics_streams.producer import PURCHASES_STREAM
from eventbus import Context, Reject, StreamMessage, on_startup, on_stream

CLAIM_IDLE = float(os.environ.get("OLYMPICS_STREAMS_CLAIM_IDLE", "30"))
MARKER_TTL = 7 * 24 * 3600  # longer than any redelivery can take
CONCURRENCY = 8
STREAM_OPTIONS: dict[str, Any] = {"claim_idle": CLAIM_IDLE, "concurrency": CONCURRENCY, "read_count": 200}

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


def read_order(msg: StreamMessage) -> Order:
    fields = {k.decode(): v for k, v in msg.fields.items()}
    order_id = fields.get("id", b"").decode()
    try:
        return parse_order(order_id, fields)
    except InvalidOrder as exc:
        raise Reject(str(exc)) from None


@on_startup
async def load_scripts(ctx: Context) -> None:
    ctx.state["sales_script"] = ctx.redis.register_script(SALES_SCRIPT)
    ctx.state["events_script"] = ctx.redis.register_script(EVENTS_SCRIPT)


@on_stream(PURCHASES_STREAM, **STREAM_OPTIONS)
async def sales_analytics(msg: StreamMessage, ctx: Context) -> None:
    """Tickets sold per UTC hour of day, over all events and per event (u32 counters, see apps.olympics)."""
    order = read_order(msg)
    keys = [marker("sales_analytics", order), HISTOGRAM, event_histogram_key(order.event)]
    await ctx.state["sales_script"](keys=keys, args=[order.hour, order.qty, MARKER_TTL])


@on_stream(PURCHASES_STREAM, **STREAM_OPTIONS)
async def events_analytics(msg: StreamMessage, ctx: Context) -> None:
    """The orders of each event, and its sales and ticket totals."""
    order = read_order(msg)
    keys = [marker("events_analytics", order), sales_key(order.event), SALES_SUMMARY]
    args = [
        order.id,
        summary_field(order.event, TOTAL_SALES),
        format_amount(order.cost),
        summary_field(order.event, TOTAL_TICKETS),
        order.qty,
        MARKER_TTL,
    ]
    await ctx.state["events_script"](keys=keys, args=args)


@on_stream(PURCHASES_STREAM, **STREAM_OPTIONS)
async def customer_purchases(msg: StreamMessage, ctx: Context) -> None:
    """Each customer's orders; SADD is idempotent, so a redelivery changes nothing."""
    order = read_order(msg)
    await ctx.redis.sadd(invoices_key(order.who), order.id)


@on_stream(PURCHASES_STREAM, claim_idle=CLAIM_IDLE)
async def opening_ceremony_alerter(msg: StreamMessage, ctx: Context) -> None:
    """Every Opening Ceremony purchase, alerted once (the marker is set before printing)."""
    order = read_order(msg)
    if order.event == OPENING_CEREMONY and await ctx.redis.set(marker("opening", order), 1, nx=True, ex=MARKER_TTL):
        alert(f"===> Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


@on_stream(PURCHASES_STREAM, claim_idle=CLAIM_IDLE)
async def ceremony_alerter(msg: StreamMessage, ctx: Context) -> None:
    """Every ceremony purchase (the pub/sub variant's pattern ``purchase_orders:* Ceremony``)."""
    order = read_order(msg)
    if order.event.endswith(" Ceremony") and await ctx.redis.set(marker("ceremony", order), 1, nx=True, ex=MARKER_TTL):
        alert(f"Purchase {order.event}: #{order.qty} ${format_amount(order.cost)}")


def alert(line: str) -> None:
    print(line, file=sys.stdout, flush=True)
