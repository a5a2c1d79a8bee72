"""What middleware costs per message, in process: ``python -m benchmarks.middleware_cost``.

A :class:`~eventbus._worker.HandlerWorker` drains a queued backlog through a handler that decodes
the benchmark's 60-byte JSON, once per variant: no middleware, one no-op middleware, three,
``timeout(5)``, ``idempotent`` is left out (it is two Redis round trips, not CPU), and the tracing
middleware on the OpenTelemetry API alone (no SDK: what an installed but unconfigured
OpenTelemetry costs) and on the SDK with a BatchSpanProcessor and an exporter that discards, next
to a middleware that only opens a bare SDK span (the SDK's own share of that cost). No
socket and no Redis: only the worker loop, the chain and the handler, so the figures are the
middleware's own cost. Variants are interleaved over the repetitions and the median is reported,
with the cost per message over the no-middleware run. The end-to-end figure (socket included) is
the drain scenario's ``eventbus_middleware`` and ``eventbus_tracing`` contenders.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from eventbus import Context, Message, Router, on
from eventbus._deadletter import DeadLetterStore
from eventbus._stats import HandlerStats
from eventbus._worker import HandlerWorker
from eventbus.middleware import Invoke
from eventbus.middlewares import timeout

PAYLOAD = orjson.dumps({"id": 123456, "event": "Opening Ceremony", "qty": 2, "who": "Jim"}).ljust(60)


async def noop(msg: Message, ctx: Context, call_next: Invoke) -> Any:
    return await call_next(msg, ctx)


def variants() -> dict[str, Callable[[], Sequence[Any]]]:
    found: dict[str, Callable[[], Sequence[Any]]] = {
        "none": lambda: [],
        "1 no-op": lambda: [noop],
        "3 no-op": lambda: [noop, noop, noop],
        "timeout(5)": lambda: [timeout(5)],
    }
    try:
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
        from opentelemetry.trace import NoOpTracerProvider

        from eventbus.middlewares.tracing import tracing_middleware
    except ImportError as exc:
        print(f"tracing variants skipped: {exc}")
        return found

    class Discard(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    sdk = TracerProvider()
    sdk.add_span_processor(BatchSpanProcessor(Discard()))
    bare = sdk.get_tracer("reference")

    async def sdk_span_only(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        # The reference: one SDK span with no attributes, what any tracing costs in this process.
        with bare.start_as_current_span("process"):
            return await call_next(msg, ctx)

    found["tracing, API only"] = lambda: [tracing_middleware(tracer_provider=NoOpTracerProvider())]
    found["tracing, SDK"] = lambda: [tracing_middleware(tracer_provider=sdk)]
    found["bare SDK span (ref)"] = lambda: [sdk_span_only]
    return found


async def drain(chain: Sequence[Any], n: int) -> float:
    """Seconds per message for ``n`` queued messages through ``chain``."""
    count = 0
    done = asyncio.Event()

    async def handle(msg: Message, ctx: Context) -> None:
        nonlocal count
        orjson.loads(msg.data)
        count += 1
        if count == n:
            done.set()

    (handler,) = Router([on("bench", middleware=list(chain))(handle)]).handlers
    ctx = Context(redis=None, publisher=None, state={}, stats=None, handler=handler.name)  # type: ignore[arg-type]
    worker = HandlerWorker(handler, ctx, HandlerStats(), DeadLetterStore(None))
    for _ in range(n):
        worker.put(Message("bench", PAYLOAD))
    started = time.perf_counter()
    worker.start()
    await done.wait()
    elapsed = time.perf_counter() - started
    await worker.stop()
    if worker.stats.failed:
        raise RuntimeError(f"{worker.stats.failed} message(s) failed")
    return elapsed / n


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", type=int, default=100_000, help="messages per run (100,000)")
    parser.add_argument("--reps", type=int, default=5, help="repetitions, interleaved (5)")
    args = parser.parse_args(argv)
    found = variants()
    times: dict[str, list[float]] = {name: [] for name in found}
    for _ in range(args.reps):
        for name, chain in found.items():
            times[name].append(asyncio.run(drain(chain(), args.n)))
    base = statistics.median(times["none"])
    print(f"{args.n:,} messages x {args.reps} interleaved repetitions; medians")
    print(f"{'middleware':<20} {'msg/s':>10} {'us/msg':>8} {'added us/msg':>13} {'vs none':>8}")
    for name, values in times.items():
        per = statistics.median(values)
        print(f"{name:<20} {1 / per:>10,.0f} {per * 1e6:>8.2f} {(per - base) * 1e6:>13.2f} {base / per:>7.2f}x")


if __name__ == "__main__":
    main()
