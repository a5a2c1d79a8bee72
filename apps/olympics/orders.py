"""A purchase order: what the producer stores and every listener reads back.

Stored as the hash ``purchase_order_details:<id>`` with the fields who, event, qty, cost and ts.
``ts`` is Unix time in seconds, which is UTC by definition: every hour-of-day in the app is
computed from it the same way (the tutorial mixed local time and UTC).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# A sanity bound, not a business rule: a hash with an absurd quantity is more likely corrupt than
# real, and letting it through would poison every total (HINCRBY errors past 2**63).
MAX_QTY = 1_000_000
FIELDS = ("who", "event", "qty", "cost", "ts")


class InvalidOrder(ValueError):
    """An order hash that is missing or cannot be read as an order."""


@dataclass(frozen=True, slots=True)
class Order:
    id: str
    who: str
    event: str
    qty: int
    cost: float  # total price of the order, in dollars
    ts: int  # when it was bought: Unix seconds (UTC)

    def __post_init__(self) -> None:
        # Checked however the order was built: parsed from its hash, or decoded from a stream entry.
        if not self.who or not self.event:
            raise InvalidOrder(f"order {self.id!r}: malformed, missing field(s) who or event")
        if not 1 <= self.qty <= MAX_QTY:
            raise InvalidOrder(f"order {self.id!r}: malformed, qty {self.qty} is not between 1 and {MAX_QTY}")
        if not 0.0 <= self.cost < math.inf:  # false for NaN and infinities too
            raise InvalidOrder(f"order {self.id!r}: malformed, cost '{format_amount(self.cost)}' is not an amount >= 0")
        if self.ts < 0:
            raise InvalidOrder(f"order {self.id!r}: malformed, ts '{self.ts}' is not a Unix time")

    @property
    def hour(self) -> int:
        """The UTC hour of day (0..23) the order was placed in."""
        return hour_of_day(self.ts)

    def fields(self) -> dict[str, str]:
        """The hash fields as stored in Redis."""
        return {
            "who": self.who,
            "event": self.event,
            "qty": str(self.qty),
            "cost": format_amount(self.cost),
            "ts": str(self.ts),
        }


def hour_of_day(ts: float) -> int:
    """UTC hour of a Unix timestamp; Unix time has no leap seconds, so days are 86,400 s."""
    return int(ts) % 86_400 // 3_600


def format_amount(amount: float) -> str:
    """``120`` rather than ``120.0`` for whole amounts, as the tutorial prints them."""
    return str(int(amount)) if float(amount).is_integer() else repr(float(amount))


def parse_order(order_id: str, raw: Mapping[Any, Any]) -> Order:
    """Build an Order from an HGETALL reply (bytes or str keys); raise InvalidOrder if it is not one."""
    if not raw:
        raise InvalidOrder(f"order {order_id!r}: no hash at purchase_order_details:{order_id} (missing or expired)")
    try:
        # The usual reply (bytes from a bytes client) decoded in one pass; anything else, or
        # bytes that are not UTF-8, field by field for the error message.
        fields = {k.decode(): v.decode() for k, v in raw.items()}
    except (AttributeError, UnicodeDecodeError):
        try:
            fields = {_text(k): _text(v) for k, v in raw.items()}
        except InvalidOrder as exc:
            raise InvalidOrder(f"order {order_id!r}: malformed, {exc}") from None
    who, event, qty_text, cost_text, ts_text = map(fields.get, FIELDS)
    if not (who and event and qty_text and cost_text and ts_text):
        missing = [name for name in FIELDS if not fields.get(name)]
        raise InvalidOrder(f"order {order_id!r}: malformed, missing field(s) {', '.join(missing)}")
    try:
        qty = int(qty_text)
        cost = float(cost_text)
        ts = float(ts_text)
    except ValueError as exc:
        raise InvalidOrder(f"order {order_id!r}: malformed, {exc}") from None
    if not math.isfinite(ts):
        raise InvalidOrder(f"order {order_id!r}: malformed, ts {ts_text!r} is not a Unix time")
    return Order(order_id, who, event, qty, cost, int(ts))


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidOrder(f"field value {value[:40]!r} is not UTF-8") from None
    return str(value)
