"""A responder for the request/reply tests: each process of a ``--workers N`` run answers with its pid."""

import os

from eventbus import Context, Message, on


@on("whoami")
async def whoami(msg: Message, ctx: Context) -> int:
    return os.getpid()
