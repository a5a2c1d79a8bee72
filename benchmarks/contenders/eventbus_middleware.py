"""eventbus with one no-op global middleware around every handler: what a middleware layer costs.

The same handlers and defaults as ``eventbus_app``; the middleware only awaits ``call_next``.
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks.contenders.eventbus_app import main
from benchmarks.contenders.recorder import load, run
from eventbus import Context, Message
from eventbus.middleware import Invoke


async def noop(msg: Message, ctx: Context, call_next: Invoke) -> Any:
    return await call_next(msg, ctx)


if __name__ == "__main__":
    _, recorder = load(sys.argv, "eventbus_middleware")
    run(recorder, lambda: main(recorder, [noop]))
