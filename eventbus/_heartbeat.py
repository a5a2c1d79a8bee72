"""Heartbeats: each runner says in Redis who it is and how its handlers are doing, every few seconds.

What a dashboard (``python -m eventbus dashboard``) or any Redis client reads to see every process
on every host, without asking the processes: so it survives the dashboard's own restart.

Two keys, with one hash tag so that a cluster keeps them on one node (and one MGET reads them):

- ``eventbus:{heartbeat}:processes``, a hash: process id (``host:pid``) -> the process's last
  snapshot as JSON (:func:`snapshot`). Kept for gone processes, so that they can be shown as gone,
  with when; the hash expires a day after the last beat of any process.
- ``eventbus:{heartbeat}:alive:<id>``: set on every beat with an expiry of :data:`TTL` seconds. A
  process whose key has expired stopped beating (killed, frozen, cut off): Redis's own clock says
  so, whatever the clocks of the hosts say.

A runner that stops cleanly writes a last snapshot with ``stopped``. A beat costs three commands
every :data:`INTERVAL` seconds (benchmarks/RESULTS.md: not measurable against drain throughput).

The snapshot also carries the recovery counters of each recoverable channel of the process
(``channels``: only the counters that are not 0, so a channel where nothing went wrong costs its
name), at most :data:`CHANNELS_SENT` of them, the first by name; ``channels_total`` says how many
there are, so a reader knows when it sees only part.
"""

from __future__ import annotations

import asyncio
import heapq
import importlib.metadata
import logging
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from eventbus._flow import ReadGate
from eventbus._hotpath import describe as describe_hot_path
from eventbus._logs import LineLimit, worker_tag
from eventbus._loops import describe_loop
from eventbus._router import stream_group
from eventbus._stats import LATENCY_BUCKETS, BusStats, RecoveryStats
from eventbus._stream_options import StreamOptions
from eventbus._tasks import cancel_and_wait
from eventbus._worker import HandlerWorker

INTERVAL = 5.0  # seconds between beats
TTL = 15  # seconds an alive key lives: three missed beats and the process is shown as gone
KEEP = 86_400  # seconds the snapshots hash lives after the last beat of any process
# Recoverable channels in one beat: a pattern may recover thousands, and each beat rewrites the snapshot.
CHANNELS_SENT = 200
PROCESSES = "eventbus:{heartbeat}:processes"
ALIVE = "eventbus:{heartbeat}:alive:"
log = logging.getLogger("eventbus.heartbeat")


def alive_key(process_id: str) -> str:
    return ALIVE + process_id


def process_id() -> str:
    """``host:pid``: unique among the processes that beat at once."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _version() -> str:
    try:
        return importlib.metadata.version("eventbus")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def percentile(buckets: Sequence[int], q: float) -> float | None:
    """The upper bound (seconds) of the latency bucket holding the ``q`` quantile; None without data.

    ``inf`` for the last bucket (longer than the largest bound).
    """
    total = sum(buckets)
    if total == 0:
        return None
    wanted = q * total
    seen = 0
    for index, count in enumerate(buckets):
        seen += count
        if seen >= wanted:
            return LATENCY_BUCKETS[index] if index < len(LATENCY_BUCKETS) else float("inf")
    return float("inf")  # pragma: no cover - seen reaches total


@dataclass(slots=True)
class _Previous:
    """A handler's counters at the previous beat: rates and latencies are over the last interval."""

    received: int = 0
    buckets: list[int] = field(default_factory=list)
    p50: float | None = None
    p99: float | None = None


@dataclass(slots=True)
class Heartbeat:
    """Beats every ``interval`` seconds for one runner, from :meth:`start` to :meth:`stop`."""

    redis: Any
    app: str
    workers: Sequence[HandlerWorker]
    stats: BusStats
    gate: ReadGate
    dead_letter_stream: Callable[[], str]
    connected: Callable[[], bool]
    interval: float = INTERVAL
    id: str = field(default_factory=process_id)
    started: float = field(default_factory=time.time)
    _previous: dict[str, _Previous] = field(default_factory=dict)
    _last: float = field(default_factory=time.monotonic)
    _task: asyncio.Task[None] | None = None
    _lines: LineLimit = field(default_factory=lambda: LineLimit(log, "heartbeat"))
    _identity: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # What does not change while the process runs, found once (reading the version scans the
        # installed distributions).
        tag = worker_tag()
        self._identity = {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "worker": tag.removeprefix("worker ") if tag else None,
            "app": self.app,
            "version": _version(),
            "hot_path": describe_hot_path(),
            "loop": describe_loop(),
        }

    def start(self) -> None:
        self._last = time.monotonic()
        self._task = asyncio.create_task(self._run(), name="eventbus:heartbeat")

    async def _run(self) -> None:
        while True:
            await self.beat()
            await asyncio.sleep(self.interval)

    async def beat(self) -> None:
        """Write this process's snapshot and refresh its alive key; a failure is logged, not raised."""
        data = orjson.dumps(self.snapshot())
        try:
            await asyncio.gather(
                self.redis.hset(PROCESSES, self.id, data),
                self.redis.set(alive_key(self.id), b"1", ex=TTL),
                self.redis.expire(PROCESSES, KEEP),
            )
        except Exception as exc:  # noqa: BLE001 - a dashboard sees less; the handlers go on
            if self._lines.allow("not written", logging.WARNING):
                log.warning("heartbeat not written to Redis (%s: %s): dashboards show this process as gone",
                            type(exc).__name__, exc)  # fmt: skip

    async def stop(self) -> None:
        """Stop beating and say so: the last snapshot says ``stopped`` (the alive key expires by itself:
        no DEL, which a runner's ACL would then grant on every key it may touch)."""
        if self._task is not None:
            await cancel_and_wait([self._task])
            self._task = None
        snapshot = self.snapshot()
        snapshot["stopped"] = snapshot["ts"]
        try:
            await self.redis.hset(PROCESSES, self.id, orjson.dumps(snapshot))
        except Exception as exc:  # noqa: BLE001 - the process shows as gone once its key expires
            log.debug("last heartbeat not written: %s: %s", type(exc).__name__, exc)
        self._lines.flush()

    def snapshot(self) -> dict[str, Any]:
        """Who this process is and how each handler is doing (JSON-ready)."""
        now = time.monotonic()
        elapsed = max(now - self._last, 1e-9)
        self._last = now
        return {
            **self._identity,
            "started": self.started,
            "ts": time.time(),
            "interval": self.interval,
            "connected": self.connected(),
            "paused": self.gate.paused,
            "messages": self.stats.messages,
            "reconnects": self.stats.reconnects,
            "dead_letter_stream": self.dead_letter_stream(),
            "handlers": [self._handler(worker, elapsed) for worker in self.workers],
            "channels": recovery_counters(self.stats.channels),
            "channels_total": len(self.stats.channels),
        }

    def _handler(self, worker: HandlerWorker, elapsed: float) -> dict[str, Any]:
        stats = worker.stats
        previous = self._previous.setdefault(worker.name, _Previous(buckets=[0] * len(stats.latency_buckets)))
        received = stats.received
        buckets = list(stats.latency_buckets)
        recent = [a - b for a, b in zip(buckets, previous.buckets, strict=True)]
        if sum(recent):  # else: the last figures measured, rather than none
            previous.p50, previous.p99 = percentile(recent, 0.5), percentile(recent, 0.99)
        rate = (received - previous.received) / elapsed
        previous.received, previous.buckets = received, buckets
        subscriptions = worker.handler.subscriptions
        recovers = any(s.recoverable for s in subscriptions)
        return {
            "name": worker.name,
            "channels": [s.name for s in subscriptions if s.kind in ("channel", "sharded")],
            "patterns": [s.name for s in subscriptions if s.kind == "pattern"],
            "streams": [
                {"stream": s.name, "group": _group(worker, s), "max_deliveries": _max_deliveries(s)}
                for s in subscriptions
                if s.kind == "stream"
            ],
            "received": received,
            "handled": stats.handled,
            "failed": stats.failed,
            "rejected": stats.rejected,
            "retried": stats.retried,
            "dropped": stats.dropped,
            "dead_lettered": stats.dead_lettered,
            "rate": round(rate, 2),
            "inbox_bytes": worker.queued_bytes,
            "inbox_budget": worker.budget,
            "p50": _finite(previous.p50),
            "p99": _finite(previous.p99),
            "paused": bool(worker._holding_gate),  # overflow="pause": this handler stopped the reading
            "recovers": recovers,  # subscribes to a recoverable Channel, as `eventbus routes` says
            "resumes": recovers and worker.handler.options.resume,
        }


def recovery_counters(channels: dict[str, RecoveryStats]) -> dict[str, dict[str, float]]:
    """The first :data:`CHANNELS_SENT` channels by name, each with its counters that are not 0."""
    names = sorted(channels) if len(channels) <= CHANNELS_SENT else heapq.nsmallest(CHANNELS_SENT, channels)
    return {name: _not_zero(channels[name]) for name in names}


_RECOVERY_COUNTERS = tuple(RecoveryStats.__dataclass_fields__)


def _not_zero(stats: RecoveryStats) -> dict[str, float]:
    # Rather than RecoveryStats.as_dict: the same values at less than half its cost, once per channel and beat.
    out: dict[str, float] = {}
    for name in _RECOVERY_COUNTERS:
        value = getattr(stats, name)
        if value:
            out[name] = round(value, 3) if name == "recovery_seconds" else value
    return out


def _group(worker: HandlerWorker, subscription: Any) -> str:
    return stream_group(subscription, worker.handler)


def _max_deliveries(subscription: Any) -> int:
    options = subscription.stream or StreamOptions()
    return int(options.max_deliveries)


def _finite(value: float | None) -> float | str | None:
    """JSON has no infinity: the last bucket is written as the string "inf"."""
    return "inf" if value == float("inf") else value


async def read_processes(redis: Any) -> list[dict[str, Any]]:
    """Every snapshot in the hash, each with ``alive`` (its key has not expired), newest first.

    A snapshot that is not a JSON object (the hash is writable by anyone who may write Redis) is
    skipped.
    """
    raw = await redis.hgetall(PROCESSES) or {}
    ids = [key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key) for key in raw]
    flags = await redis.mget([alive_key(i) for i in ids]) if ids else []
    out: list[dict[str, Any]] = []
    for (key, value), flag in zip(raw.items(), flags, strict=True):
        try:
            snapshot = orjson.loads(value)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(snapshot, dict):
            continue
        snapshot["id"] = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
        snapshot["alive"] = flag is not None and "stopped" not in snapshot
        out.append(snapshot)
    out.sort(key=lambda s: (not s["alive"], -_number(s.get("ts"))))
    return out


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0
