"""eventbus with a typed handler: the payload decoded into a ``msgspec.Struct`` by annotation (issue 13).

The same drain as ``eventbus_app`` (default options, public API), but the handler is
``async def handler(tick: Tick, ctx)``: eventbus decodes each 60-byte JSON payload into a Struct
before the call, where the plain contender's body decodes it with orjson into a dict. The body
here only counts, so the two rows compare decoding-by-annotation with ``orjson.loads`` by hand.
Drain only: the other scenarios' bodies need the raw bytes.
"""

from __future__ import annotations

import sys
from typing import Any

import msgspec

from benchmarks.contenders.eventbus_app import serve
from benchmarks.contenders.recorder import Recorder, load, run
from benchmarks.spec import HandlerDef
from eventbus import Context, on, on_pattern


class Tick(msgspec.Struct):
    """The benchmark's payload: {"id": 1, "from": "+1202...", "to": "+5584...", "m": "xxx"}."""

    id: int
    from_: str = msgspec.field(name="from")
    to: str = ""
    m: str = ""


def make_handler(h: HandlerDef, rec: Recorder) -> Any:
    if rec.spec.mode != "drain":
        raise SystemExit(f"eventbus_typed runs the drain scenario only, not {rec.spec.mode!r}")
    count = rec.counters[h.name].count_body()

    async def handler(tick: Tick, ctx: Context) -> None:
        count(b"")

    handler.__name__ = handler.__qualname__ = h.name
    mark = on if h.kind == "channel" else on_pattern
    return mark(*h.subs)(handler)


async def main(rec: Recorder) -> None:
    await serve(rec, [make_handler(h, rec) for h in rec.spec.handlers])


if __name__ == "__main__":
    _, recorder = load(sys.argv, "eventbus_typed")
    run(recorder, lambda: main(recorder))
