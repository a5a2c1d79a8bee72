"""A small handler module used by the CLI and runner tests, as a user would write one."""

from eventbus import Context, Message, on, on_pattern, on_shutdown, on_startup


@on_startup
async def opened(ctx: Context) -> None:
    await ctx.redis.set("sample:started", "1")


@on("purchase_orders")
async def count(msg: Message, ctx: Context) -> None:
    await ctx.redis.incr("orders_seen")
    await ctx.redis.rpush("orders", msg.data)


@on_pattern("purchase_orders:* Ceremony")
async def ceremony(msg: Message, ctx: Context) -> None:
    await ctx.redis.rpush("ceremony", f"{msg.channel}|{msg.pattern}|{msg.text}")


@on("purchase_orders:Opening Ceremony")
def opening_sync(msg: Message, ctx: Context) -> None:
    # A plain def runs in a worker thread; it records that it did via the shared state.
    ctx.state.setdefault("opening", []).append(msg.text)


@on_shutdown
async def closed(ctx: Context) -> None:
    await ctx.redis.set("sample:stopped", "1")
