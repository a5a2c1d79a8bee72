"""Batch handlers of every subscription kind, for the routes, AsyncAPI and batch tests."""

from __future__ import annotations

import msgspec

from eventbus import Batch, Context, Message, StreamMessage, on, on_pattern, on_stream


class Order(msgspec.Struct):
    id: int
    customer: str


@on("orders", batch=Batch(max_size=500, max_wait=0.05))
async def tally(msgs: list[Message], ctx: Context) -> None:
    """Count the orders, a batch at a time."""


@on("orders", batch=Batch(max_size=50, max_wait=0.2), key="customer", name="store")
async def store(orders: list[Order], ctx: Context, msgs: list[Message]) -> None:
    """Store the orders, decoded one by one."""


@on_pattern("orders:*", batch=Batch())
async def watch(msgs, ctx):  # type: ignore[no-untyped-def]
    """Everything under orders:, raw and unannotated."""


@on_stream("audit", group="auditors", batch=Batch(max_size=200, max_wait=1.0), read_count=200)
async def audit(entries: list[StreamMessage], ctx: Context) -> None:
    """The audit trail, acknowledged a batch at a time."""
