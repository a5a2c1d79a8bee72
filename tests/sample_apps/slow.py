"""A handler that takes a while, and a shutdown hook: what a graceful stop must wait for and run."""

import asyncio
import os

from eventbus import Context, Message, on, on_shutdown


@on("slow")
async def slow(msg: Message, ctx: Context) -> None:
    ctx.log.warning("slow handler started on %s", msg.text)
    await asyncio.sleep(0.5)
    await ctx.redis.rpush("slow:done", msg.data)


@on("slow", name="received")
async def received(msg: Message, ctx: Context) -> None:
    # Read off the connection: a test that stops the runner waits for this first, since a message
    # still on its way when reading stops is lost (pub/sub is at-most-once), not queued work.
    await ctx.redis.rpush("slow:received", msg.data)


@on_shutdown
async def stopped(ctx: Context) -> None:
    await ctx.redis.rpush("slow:stopped", os.getpid())
    ctx.log.warning("shutdown hook ran")
