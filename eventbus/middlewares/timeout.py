"""``timeout(seconds)``: an attempt that runs longer fails with :class:`HandlerTimeout`.

The failure is an ordinary handler failure: retried, then dead-lettered, by the handler's policy
(a stream entry stays pending for redelivery until ``max_deliveries``). The handler's coroutine is
cancelled at the deadline. A plain ``def`` handler runs in a thread, which cannot be cancelled:
the attempt fails at the deadline all the same, but the thread runs on to its end.

Put it inside tracing or timing middleware (later in the list) so they see the timeout as the
attempt's outcome; put it outside middleware that must not be cut short.
"""

from __future__ import annotations

import asyncio
from typing import Any

from eventbus._context import Context
from eventbus._errors import ConfigError, EventbusError
from eventbus._message import Message
from eventbus.middleware import Invoke, Middleware


class HandlerTimeout(EventbusError, TimeoutError):
    """A handler attempt overran the deadline of the :func:`timeout` middleware."""


def timeout(seconds: float) -> Middleware:
    """Middleware failing any attempt that takes longer than ``seconds``."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ConfigError(f"timeout(seconds) needs a number of seconds > 0, got {seconds!r}")
    limit = float(seconds)

    async def timeout_middleware(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                return await call_next(msg, ctx)
        except TimeoutError:
            if not deadline.expired():
                raise  # the handler's own TimeoutError (a client's, say): not ours to rename
            raise HandlerTimeout(f"handler {ctx.handler} took longer than its {limit:g}s timeout") from None

    timeout_middleware.__qualname__ = f"timeout({limit:g})"
    return timeout_middleware
