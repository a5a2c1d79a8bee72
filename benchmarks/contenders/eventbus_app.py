"""eventbus through its public API: ``@on`` / ``@on_pattern`` handlers run by ``eventbus.Runner``.

The handlers are built from the spec (so the scenario decides channels and counts) but are plain
decorated ``async def`` functions with default options (but for ``inbox_size``, see below), as
a user module contains.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import eventbus
from benchmarks.contenders.recorder import Body, load
from benchmarks.spec import HandlerDef
from eventbus import Context, Message, on, on_pattern

DEFAULT_INBOX = 10_000


def make_handler(h: HandlerDef, body: Body) -> Any:
    async def handler(msg: Message, ctx: Context) -> None:
        body(msg.data)

    handler.__name__ = handler.__qualname__ = h.name  # handler names must be unique
    mark = on if h.kind == "channel" else on_pattern
    # The reader is eager: a whole backlog lands in the inbox at once, and with the default
    # inbox_size (10,000) the rest would be dropped by policy. The benchmark measures speed, so the
    # inbox is sized to the workload; drops would still be counted and reported.
    inbox = max(DEFAULT_INBOX, h.expected)
    # One decorator with every channel (scenario 3 gives it 10,000).
    return mark(*h.subs, inbox_size=inbox)(handler)


async def main() -> None:
    spec, rec = load(sys.argv, "eventbus")
    handlers = [make_handler(h, rec.body(h.name)) for h in spec.handlers]
    runner = eventbus.Runner(handlers, url=spec.url)

    def stats() -> dict[str, Any]:
        s = getattr(runner, "stats", None)
        as_dict = getattr(s, "as_dict", None)
        return as_dict() if callable(as_dict) else {}

    rec.extra = stats  # dropped / unrouted counts explain an incomplete run
    await runner.serve()


if __name__ == "__main__":
    asyncio.run(main())
