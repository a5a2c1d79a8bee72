"""A handler that resumes after a restart, as the restart tests run it in a real process."""

from eventbus import Channel, Context, on

invoices = Channel("invoices", history=100_000)


@on(invoices, name="billing", resume=True)
async def bill(number: int, ctx: Context) -> None:
    await ctx.redis.rpush("billed", number)
