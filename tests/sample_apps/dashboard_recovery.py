"""A handler on a recoverable channel that resumes after a restart, for the dashboard's tests:
its channel's recovery figures show on the page."""

from __future__ import annotations

from eventbus import Channel, Context, Message, on

PAYMENTS = Channel("dashboard-demo:payments", history=1000)
SETTLED = "dashboard-demo:settled"


@on(PAYMENTS, resume=True)
async def settle_payment(msg: Message, ctx: Context) -> None:
    await ctx.redis.incr(SETTLED)
