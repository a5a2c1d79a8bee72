"""Typed handlers of every subscription kind, for the AsyncAPI and routes tests."""

from __future__ import annotations

import dataclasses
from typing import TypedDict

import msgspec
import pydantic

from eventbus import Context, Message, on, on_pattern, on_stream

__version__ = "1.2.3"


class Line(msgspec.Struct):
    sku: str
    qty: int


class Order(msgspec.Struct):
    id: int
    customer: str
    lines: list[Line] = []


class Stored(pydantic.BaseModel):
    id: int
    total: float


@dataclasses.dataclass
class Refund:
    order: int
    reason: str


class Audit(TypedDict):
    who: str
    what: str


@on("orders", concurrency=4, key="customer", publishes={"orders:stored": Stored})
async def store(order: Order, ctx: Context) -> None:
    """Store an order and announce it."""
    await ctx.publish("orders:stored", Stored(id=order.id, total=0.0))


@on_pattern("orders:*")
async def watch(msg: Message, ctx: Context) -> None:
    """Everything under orders:, raw."""


@on("refunds", sharded=True)
async def refund(refund: Refund, ctx: Context, msg: Message) -> None:
    pass


@on_stream("audit", group="auditors")
async def audit(entry: Audit, ctx: Context) -> None:
    pass


@on("order-ids")
async def order_id(order_id: int, ctx: Context) -> None:
    pass


@on("notes")
def note(text: str, ctx: Context) -> None:
    pass
