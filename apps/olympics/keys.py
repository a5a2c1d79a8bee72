"""Every Redis key and channel name the olympics app uses, in one place.

The names are the tutorial's, so its data can be inspected with the same ``redis-cli`` commands.
"""

from __future__ import annotations

ORDERS_CHANNEL = "purchase_orders"
OPENING_CEREMONY = "Opening Ceremony"
# Channels are ``purchase_orders:<event name>``; event names contain spaces.
CEREMONY_PATTERN = f"{ORDERS_CHANNEL}:* Ceremony"

EVENTS = "events"  # set of event names created with create_event
SALES_SUMMARY = "sales_summary"  # hash: "<event>:total_sales", "<event>:total_tickets_sold"
HISTOGRAM = "sales_histogram:time_of_day"  # BITFIELD of 24 u32 counters, one per UTC hour

TOTAL_SALES = "total_sales"
TOTAL_TICKETS = "total_tickets_sold"

# Key prefixes, for the reset command (SCAN MATCH <prefix>*).
PREFIXES = ("purchase_order_details:", "sales:", "invoices:", "event:", f"{HISTOGRAM}:")


def event_channel(event: str) -> str:
    return f"{ORDERS_CHANNEL}:{event}"


def order_key(order_id: str) -> str:
    return f"purchase_order_details:{order_id}"


def event_key(event: str) -> str:
    return f"event:{event}"


def sales_key(event: str) -> str:
    return f"sales:{event}"


def invoices_key(who: str) -> str:
    return f"invoices:{who}"


def event_histogram_key(event: str) -> str:
    return f"{HISTOGRAM}:{event}"


def summary_field(event: str, total: str) -> str:
    return f"{event}:{total}"
