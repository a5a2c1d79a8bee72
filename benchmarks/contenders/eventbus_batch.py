"""eventbus with a no-op batch handler: ``@on(..., batch=Batch())`` taking ``list[Message]`` (issue 23).

The same drain as ``eventbus_app`` (public API, default options, the default ``Batch()``), but
the handler is called once per batch and only counts the batch's messages: no decoding, no work
per message. Beside the ``limit`` contender (hiredis on a raw socket, the handler awaited per
message) it shows what batching saves of the per-message cost of the framework itself.
Drain only.
"""

from __future__ import annotations

import sys
from typing import Any

from benchmarks.contenders.eventbus_app import serve
from benchmarks.contenders.recorder import Recorder, load, run
from benchmarks.spec import HandlerDef
from eventbus import Batch, Context, Message, on, on_pattern


def make_handler(h: HandlerDef, rec: Recorder) -> Any:
    if rec.spec.mode != "drain":
        raise SystemExit(f"eventbus_batch runs the drain scenario only, not {rec.spec.mode!r}")
    count = rec.counters[h.name].batch_body()

    async def handler(msgs: list[Message], ctx: Context) -> None:
        count(len(msgs))

    handler.__name__ = handler.__qualname__ = h.name
    mark = on if h.kind == "channel" else on_pattern
    return mark(*h.subs, batch=Batch())(handler)


async def main(rec: Recorder) -> None:
    await serve(rec, [make_handler(h, rec) for h in rec.spec.handlers])


if __name__ == "__main__":
    _, recorder = load(sys.argv, "eventbus_batch")
    run(recorder, lambda: main(recorder))
