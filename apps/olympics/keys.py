"""Every Redis key and channel name the olympics app uses, in one place.

The names are the tutorial's, so its data can be inspected with the same ``redis-cli`` commands,
and producers written the tutorial's way keep working. :class:`Keys` puts them under a prefix:
the demo does so when it simulates on a server it did not start, to keep its invented data apart.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eventbus import Channel

ORDERS_CHANNEL = "purchase_orders"
OPENING_CEREMONY = "Opening Ceremony"
# Channels are ``purchase_orders:<event name>``; event names contain spaces.
CEREMONY_PATTERN = f"{ORDERS_CHANNEL}:* Ceremony"

EVENTS = "events"  # set of event names created with create_event
SALES_SUMMARY = "sales_summary"  # hash: "<event>:total_sales", "<event>:total_tickets_sold"
HISTOGRAM = "sales_histogram:time_of_day"  # BITFIELD of 24 u32 counters, one per UTC hour

TOTAL_SALES = "total_sales"
TOTAL_TICKETS = "total_tickets_sold"


# How much of each purchase channel Redis keeps, so that listeners stopped for a restart or a
# deploy catch up on what was announced meanwhile (the README says how these were chosen).
ORDERS_HISTORY = 100_000
ORDERS_TTL = 3_600

# Every purchase is announced here, and on its event's channel (``orders_of``).
ORDERS = Channel(ORDERS_CHANNEL, history=ORDERS_HISTORY, ttl=ORDERS_TTL)


def event_channel(event: str) -> str:
    return f"{ORDERS_CHANNEL}:{event}"


def orders_of(event: str) -> Channel:
    """The channel announcing the purchases of one event, ``purchase_orders:<event>``."""
    return Channel(event_channel(event), history=ORDERS_HISTORY, ttl=ORDERS_TTL)


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


# The demo's own namespace, for when it simulates on a server it did not start: its invented
# purchases must not mix with (or be mistaken for) anyone's real data under the tutorial's names.
DEMO_PREFIX = "olympics-demo:"
# A set, under the prefix, of the keys the app created (see apps.olympics.registry).
CREATED = "olympics:created"
# Set by the demo on a server the runner started itself (embedded): reset need not ask there.
THROWAWAY_MARKER = "olympics:throwaway-server"
# The demo's own dead-letter stream, under its prefix: its rejections stay with its data (and reset
# removes them). Without a prefix the app uses the runner's (``--dead-letter-stream``).
DEAD_LETTERS = "dead-letter"
# Where the listeners find the Keys in use (ctx.state); absent means the tutorial's names.
STATE_KEY = "apps.olympics.keys"


@dataclass(frozen=True, slots=True)
class Keys:
    """Every key name of the app, under ``prefix`` ("" is the tutorial's names, the default).

    Channels are not prefixed: Pub/Sub channels are shared by every database of a server, and
    producers written the tutorial's way publish on ``purchase_orders``.
    """

    prefix: str = ""

    @property
    def events(self) -> str:
        return self.prefix + EVENTS

    @property
    def sales_summary(self) -> str:
        return self.prefix + SALES_SUMMARY

    @property
    def histogram(self) -> str:
        return self.prefix + HISTOGRAM

    @property
    def created(self) -> str:
        return self.prefix + CREATED

    @property
    def throwaway_marker(self) -> str:
        return self.prefix + THROWAWAY_MARKER

    @property
    def dead_letters(self) -> str | None:
        """The app's own dead-letter stream under the prefix; None for the tutorial's names."""
        return self.prefix + DEAD_LETTERS if self.prefix else None

    def order(self, order_id: str) -> str:
        return self.prefix + order_key(order_id)

    def event(self, event: str) -> str:
        return self.prefix + event_key(event)

    def sales(self, event: str) -> str:
        return self.prefix + sales_key(event)

    def invoices(self, who: str) -> str:
        return self.prefix + invoices_key(who)

    def event_histogram(self, event: str) -> str:
        return self.prefix + event_histogram_key(event)

    def describe(self) -> str:
        """For messages: where the data is."""
        return f"under the key prefix {self.prefix!r}" if self.prefix else "under the tutorial's key names"


TUTORIAL_KEYS = Keys()


def keys_in_use(state: Mapping[str, Any]) -> Keys:
    """The Keys the app's listeners use (from ``ctx.state``): the demo may have chosen a prefix."""
    keys = state.get(STATE_KEY, TUTORIAL_KEYS)
    assert isinstance(keys, Keys)
    return keys
