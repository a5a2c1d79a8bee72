"""The handler bodies and the bookkeeping every contender shares.

A body is a plain ``def body(data: bytes) -> None``: it decodes the JSON with orjson (the work the
issue asks each handler to do) and counts. Each contender wraps it in its own handler shape, so the
only thing that differs between contenders is how a message travels from the socket to the body.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any

import orjson

from benchmarks.spec import HandlerDef, Spec

Body = Callable[[bytes], None]
Handler = Callable[[bytes], Awaitable[None]]
clock = time.monotonic_ns  # CLOCK_MONOTONIC: one clock for every process on the machine


def peak_rss_kib() -> int:
    """VmHWM: the process's peak resident set, as the kernel tracked it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class Counter:
    """Counts one handler's invocations; the last expected one marks the handler done."""

    __slots__ = ("_expected", "_recorder", "latencies", "n", "name", "t_done", "t_first", "t_last")

    def __init__(self, handler: HandlerDef, recorder: Recorder) -> None:
        self.name = handler.name
        self.n = 0
        self.t_first = 0
        self.t_done = 0
        self.t_last = 0  # burst mode only: when the last call so far happened
        self.latencies: list[int] = []
        self._expected = handler.expected
        self._recorder = recorder

    def drain_body(self) -> Body:
        loads = orjson.loads
        expected = self._expected

        def body(data: bytes) -> None:
            loads(data)
            n = self.n = self.n + 1
            if n == 1:
                self.t_first = clock()
                self._recorder.mark_start()
            if n == expected:
                self.t_done = clock()
                self._recorder.handler_done()

        return body

    def burst_body(self) -> Body:
        """The drain body, also noting each call's time: a burst may end short of ``expected``."""
        loads = orjson.loads
        expected = self._expected

        def body(data: bytes) -> None:
            loads(data)
            n = self.n = self.n + 1
            self.t_last = clock()
            if n == 1:
                self.t_first = self.t_last
                self._recorder.mark_start()
            if n == expected:
                self.t_done = self.t_last
                self._recorder.handler_done()

        return body

    def batch_body(self) -> Callable[[int], None]:
        """For a batch handler that does nothing: call it with each batch's size."""
        expected = self._expected

        def body(size: int) -> None:
            before = self.n
            n = self.n = before + size
            if before == 0:
                self.t_first = clock()
                self._recorder.mark_start()
            if before < expected <= n:
                self.t_done = clock()
                self._recorder.handler_done()

        return body

    def count_body(self) -> Body:
        """For handlers that do their own work (olympics): call it when a message is finished."""
        expected = self._expected

        def body(data: bytes) -> None:
            n = self.n = self.n + 1
            if n == 1:
                self.t_first = clock()
                self._recorder.mark_start()
            if n == expected:
                self.t_done = clock()
                self._recorder.handler_done()

        return body

    def latency_body(self) -> Body:
        loads = orjson.loads
        expected = self._expected
        record = self.latencies.append

        def body(data: bytes) -> None:
            now = clock()  # first, so decoding is not counted as transport latency
            record(now - loads(data)["ts"])
            n = self.n = self.n + 1
            if n == 1:
                self.t_first = now
                self._recorder.mark_start()
            if n == expected:
                self.t_done = clock()
                self._recorder.handler_done()

        return body


class Gate:
    """Burst mode: the first handler call waits here until the orchestrator says "published".

    The orchestrator creates the release file once the whole backlog is sent, so every contender's
    handler is busy for exactly the publishing, whatever the machine's speed. Each contender waits
    the way its design waits: an ``async def`` handler awaits (its event loop stays free), a thread
    sleeps (its thread is blocked). Only the first call ever waits; afterwards ``closed`` is False
    and costs one attribute read per call.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.closed = True

    def _still_closed(self) -> bool:
        if os.path.exists(self.path):
            self.closed = False
        return self.closed

    async def wait_async(self) -> None:
        # Polling a file works alike for every process and thread; an Event could not be set from
        # the orchestrator's process.
        while self._still_closed():  # noqa: ASYNC110
            await asyncio.sleep(0.005)

    def wait_sync(self) -> None:
        while self._still_closed():
            time.sleep(0.005)


class Recorder:
    """Collects the counters of one consumer process and writes its result once.

    ``handler_done`` may be called from several threads (the thread-per-listener contender), so
    the completion count is locked; the per-message path takes no lock because each handler runs
    in one thread at a time in every contender.
    """

    def __init__(self, spec: Spec, contender: str) -> None:
        self.spec = spec
        self.contender = contender
        self.counters = {h.name: Counter(h, self) for h in spec.handlers}
        self.extra: Callable[[], dict[str, Any]] | None = None  # contender-specific figures
        self.done = threading.Event()
        self.gate = Gate(spec.out + ".release") if spec.mode == "burst" else None
        self.loop_name = ""  # the event loop class that ran, set by run()
        self.errors: list[str] = []  # exceptions that ended the consumer or one of its threads
        self._lock = threading.Lock()
        self._remaining = len(self.counters)
        self._written = False
        self.last_progress = 0  # clock() when the watchdog last saw the count move
        # The consumer's own CPU time over the same span: on a busy shared machine it is far
        # steadier than wall time, so the report shows both.
        self.cpu_first = 0
        self.cpu_last = 0

    def body(self, handler_name: str) -> Body:
        c = self.counters[handler_name]
        if self.spec.mode == "latency":
            return c.latency_body()
        if self.spec.mode == "burst":
            return c.burst_body()
        return c.count_body() if self.spec.mode == "count" else c.drain_body()

    def async_handler(self, handler_name: str) -> Handler:
        """``async def handler(data)`` around the body; in burst mode its first call waits at the gate."""
        body = self.body(handler_name)
        gate = self.gate
        if gate is None:

            async def handler(data: bytes) -> None:
                body(data)

            return handler

        async def gated(data: bytes) -> None:
            if gate.closed:
                await gate.wait_async()
            body(data)

        return gated

    def sync_body(self, handler_name: str) -> Body:
        """The body for a thread's blocking loop; in burst mode its first call blocks at the gate."""
        body = self.body(handler_name)
        gate = self.gate
        if gate is None:
            return body

        def gated(data: bytes) -> None:
            if gate.closed:
                gate.wait_sync()
            body(data)

        return gated

    def mark_start(self) -> None:
        # CPU time is process-wide (all threads): the first handler call of any handler starts it.
        if not self.cpu_first:
            self.cpu_first = time.process_time_ns()

    def handler_done(self) -> None:
        with self._lock:
            self._remaining -= 1
            last = self._remaining == 0
        if last:
            self.cpu_last = time.process_time_ns()
            self.write(complete=True)

    def total(self) -> int:
        return sum(c.n for c in self.counters.values())

    def write(self, complete: bool) -> None:
        with self._lock:
            if self._written:
                return
            self._written = True
        started = [c.t_first for c in self.counters.values() if c.n]
        # An incomplete handler has no t_done: its last call's time (burst mode) or the watchdog's
        # last sight of progress stands in.
        ended = [c.t_done or c.t_last or self.last_progress for c in self.counters.values() if c.n]
        total = self.total()
        elapsed = (max(ended) - min(started)) / 1e9 if started else 0.0
        result: dict[str, Any] = {
            "contender": self.contender,
            "complete": complete,
            "count": total,
            "expected": self.spec.expected_total,
            "elapsed_s": elapsed,
            "rate": total / elapsed if elapsed > 0 else 0.0,
            "cpu_s": (self.cpu_last - self.cpu_first) / 1e9 if self.cpu_last else None,
            "peak_rss_kib": peak_rss_kib(),
            "per_handler": {c.name: c.n for c in self.counters.values()},
            "t_first_ns": min(started) if started else None,  # CLOCK_MONOTONIC, comparable across processes
            "t_end_ns": max(ended) if ended else None,
            "loop": self.loop_name,
        }
        if self.errors:
            result["consumer_errors"] = self.errors
        if self.spec.mode == "latency":
            result["latency_us"] = _percentiles([x for c in self.counters.values() for x in c.latencies])
        if self.extra is not None:
            try:
                result["extra"] = self.extra()
            except Exception as exc:  # noqa: BLE001 - the figures matter more than the extras
                result["extra"] = {"error": repr(exc)}
        tmp = self.spec.out + ".tmp"
        with open(tmp, "wb") as f:
            f.write(orjson.dumps(result))
        os.replace(tmp, self.spec.out)  # atomic: the orchestrator never reads half a file
        self.done.set()

    def start_watchdog(self) -> None:
        """Write a partial result if messages stop arriving (dropped, lost, or a stuck consumer)."""

        def watch() -> None:
            last, since = -1, time.monotonic()
            while not self.done.wait(0.5):
                n = self.total()
                if self.gate is not None and self.gate.closed:
                    since = time.monotonic()  # held on purpose (burst mode): not a stall
                elif n != last:
                    last, since = n, time.monotonic()
                    self.last_progress = clock()
                elif n > 0 and time.monotonic() - since > self.spec.stall_seconds:
                    print(f"{self.contender}: stalled at {n}/{self.spec.expected_total}", file=sys.stderr)
                    self.write(complete=False)
                    return

        threading.Thread(target=watch, name="bench-watchdog", daemon=True).start()


def _percentiles(values_ns: list[int]) -> dict[str, float]:
    if not values_ns:
        return {}
    v = sorted(values_ns)

    def at(q: float) -> float:
        return v[min(len(v) - 1, int(q * len(v)))] / 1000

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": v[-1] / 1000, "n": len(v)}


def load(argv: list[str], contender: str) -> tuple[Spec, Recorder]:
    """The spec named on the command line and a recorder for it, watchdog running.

    An exception that ends the process (say, redis-py's ``ConnectionError`` after Redis dropped a
    slow subscriber) still writes the figures so far, with the error, so the orchestrator can
    report what was delivered instead of only "exited". One that ends a thread is noted, and the
    watchdog writes once the count stops moving.
    """
    if len(argv) != 2:
        raise SystemExit(f"usage: python -m benchmarks.contenders.{contender} SPEC.json")
    spec = Spec.load(argv[1])
    rec = Recorder(spec, contender)

    def crashed(et: type[BaseException], e: BaseException, tb: TracebackType | None) -> None:
        rec.errors.append(f"{et.__name__}: {e}")
        rec.write(complete=False)
        sys.__excepthook__(et, e, tb)

    def thread_crashed(args: threading.ExceptHookArgs) -> None:
        rec.errors.append(
            f"thread {args.thread.name if args.thread else '?'}: {args.exc_type.__name__}: {args.exc_value}"
        )
        threading.__excepthook__(args)

    sys.excepthook = crashed
    threading.excepthook = thread_crashed
    rec.start_watchdog()
    return spec, rec


def run(rec: Recorder, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run an asyncio contender on the event loop its spec names (the standard one or uvloop)."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if rec.spec.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        rec.loop_name = type(runner.get_loop()).__module__ + "." + type(runner.get_loop()).__name__
        runner.run(main())
