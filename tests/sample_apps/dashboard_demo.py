"""A handler that fails while a flag is set in Redis, for the dashboard's tests: its dead letters
can then be replayed from the page once the flag is gone. Payloads are shown masked."""

from __future__ import annotations

import re

from eventbus import Context, Message, on, payload_mask

BROKEN = "dashboard-demo:broken"
RECORDED = "dashboard-demo:recorded"
CHANNEL = "dashboard-demo:orders"


@on(CHANNEL)
async def record_order(msg: Message, ctx: Context) -> None:
    if await ctx.redis.get(BROKEN):
        raise RuntimeError("the ledger is closed for maintenance")
    await ctx.redis.incr(RECORDED)


@payload_mask
def masked(payload: bytes) -> str:
    """Digits of phone numbers hidden but the last four, as apps.broadcast's logs do."""
    return re.sub(r"\+?\d{7,15}", lambda m: "*" * (len(m.group(0)) - 4) + m.group(0)[-4:], payload.decode())
