"""eventbus through its public API: ``@on`` / ``@on_pattern`` handlers run by ``eventbus.Runner``.

The handlers are built from the spec (so the scenario decides channels and counts) but are plain
decorated ``async def`` functions with default options, as a user module contains: the benchmark
measures what a user gets without tuning (issue 10). If the defaults drop part of a backlog, the
run is incomplete and eventbus's own drop counters say so in the report.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import eventbus
from benchmarks.contenders.recorder import Recorder, load, run
from benchmarks.spec import HandlerDef
from eventbus import Context, Message, on, on_pattern


def make_handler(h: HandlerDef, rec: Recorder) -> Any:
    body = rec.body(h.name)
    gate = rec.gate
    if gate is None:

        async def handler(msg: Message, ctx: Context) -> None:
            body(msg.data)

    else:  # burst mode: the first call stays busy until the whole backlog is published

        async def handler(msg: Message, ctx: Context) -> None:
            if gate.closed:
                await gate.wait_async()
            body(msg.data)

    handler.__name__ = handler.__qualname__ = h.name  # handler names must be unique
    mark = on if h.kind == "channel" else on_pattern
    # One decorator with every channel (scenario 3 gives it 10,000); default options.
    return mark(*h.subs)(handler)


async def main(rec: Recorder, middleware: Sequence[Any] = ()) -> None:
    handlers = [make_handler(h, rec) for h in rec.spec.handlers]
    # middleware: the eventbus_middleware / eventbus_tracing variants (issue 14); none by default.
    runner = eventbus.Runner(handlers, url=rec.spec.url, middleware=middleware)
    # The heartbeat's cost (issue 25): "off" for none, or seconds between beats (default: the runner's).
    beats = os.environ.get("BENCH_HEARTBEAT_INTERVAL")
    if beats:
        runner.heartbeat_interval = None if beats == "off" else float(beats)

    def stats() -> dict[str, Any]:
        s = getattr(runner, "stats", None)
        as_dict = getattr(s, "as_dict", None)
        return as_dict() if callable(as_dict) else {}

    rec.extra = stats  # dropped / unrouted / reconnect counts explain an incomplete run
    await runner.serve()


async def serve(rec: Recorder, handlers: list[Any]) -> None:
    """Run ``handlers`` with default settings, the runner's counters in the result."""
    runner = eventbus.Runner(handlers, url=rec.spec.url)
    rec.extra = runner.stats.as_dict
    await runner.serve()


if __name__ == "__main__":
    _, recorder = load(sys.argv, "eventbus")
    run(recorder, lambda: main(recorder))
