"""A stream worker for the dashboard's tests: its consumer group shows on the page."""

from __future__ import annotations

from eventbus import Context, StreamMessage, on_stream

STREAM = "dashboard-demo:invoices"


@on_stream(STREAM, group="billing")
async def bill(msg: StreamMessage, ctx: Context) -> None:
    await ctx.redis.incr("dashboard-demo:billed")
