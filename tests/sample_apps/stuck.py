"""A handler that never finishes, for shutdown tests."""

import asyncio

from eventbus import Context, Message, on


@on("stuck")
async def stuck(msg: Message, ctx: Context) -> None:
    ctx.log.warning("stuck handler started")
    await asyncio.sleep(3600)
