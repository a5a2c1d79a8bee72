"""apps.olympics - the tutorial's Olympics ticket sales, on eventbus.

    python -m eventbus run apps.olympics          the whole demo: listeners, simulated sales,
                                                  alerts, then the report (Ctrl-C to stop)
    python -m apps.olympics simulate --url URL    post purchases to listeners running elsewhere
    python -m apps.olympics report --url URL      the sales summary and time-of-day chart

Importing this package exposes the five listeners and the demo's lifecycle hooks (so eventbus
can load it as a target), and the producer API for services that sell tickets.
"""

from apps.olympics.demo import start_simulation, stop_simulation
from apps.olympics.listeners import (
    ceremony_alerter,
    customer_purchases,
    events_analytics,
    opening_ceremony_alerter,
    sales_analytics,
)
from apps.olympics.orders import InvalidOrder, Order, parse_order
from apps.olympics.producer import create_event, post_purchase, wait_for_listeners
from apps.olympics.report import SalesReport, load_report, render_report
from apps.olympics.simulator import EVENT_PRICES, create_events, generate_orders, simulate

__all__ = [
    "EVENT_PRICES",
    "InvalidOrder",
    "Order",
    "SalesReport",
    "ceremony_alerter",
    "create_event",
    "create_events",
    "customer_purchases",
    "events_analytics",
    "generate_orders",
    "load_report",
    "opening_ceremony_alerter",
    "parse_order",
    "post_purchase",
    "render_report",
    "sales_analytics",
    "simulate",
    "start_simulation",
    "stop_simulation",
    "wait_for_listeners",
]
