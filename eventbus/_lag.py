"""Consumer-group lag of ``@on_stream`` handlers: how far behind each group is, and what is stuck.

Per stream and group:

- ``lag``: entries in the stream not yet delivered to the group. Redis 7 reports it in
  ``XINFO GROUPS``; where it cannot (an older server, or Redis 7 after ``XDEL`` of an entry the
  group has not reached yet answers nil) it is counted here with ``XRANGE`` from the group's
  last-delivered id, up to :data:`COUNT_LIMIT` entries (then ``lag_exact`` is False and the figure
  is a lower bound).
- ``pending``: entries delivered but not yet acknowledged (``XPENDING`` summary).
- ``oldest_pending_idle``: seconds since the oldest pending entry was last delivered (its
  ``XPENDING`` idle time): a handler stuck on it, or a dead consumer nobody claimed from yet.
- ``exhausted``: pending entries already delivered ``max_deliveries`` times or more, among the
  oldest :data:`SCAN_LIMIT` pending ones; one more failure or crash dead-letters them.

The figures cost a few commands per group, so they are never taken per message: the runner takes
them for its periodic summary line and when Prometheus scrapes, through :class:`LagMonitor`, which
caches them for ``max_age`` seconds so that frequent scrapes do not add load.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("eventbus.lag")

COUNT_LIMIT = 10_000  # entries counted with XRANGE when the server does not report the lag
SCAN_LIMIT = 1_000  # oldest pending entries inspected for their delivery counts


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else str(value)


@dataclass(frozen=True, slots=True)
class GroupLag:
    """The figures of one consumer group on one stream (see the module docstring)."""

    stream: str
    group: str
    max_deliveries: int
    exists: bool = True  # False: no such stream or group yet (it is created on the first run)
    lag: int | None = None
    lag_exact: bool = True
    pending: int = 0
    oldest_pending_idle: float | None = None
    exhausted: int = 0
    consumers: int = 0

    def describe(self) -> str:
        """A few words for the summary line: ``orders/billing lag=3 pending=1 oldest=2.0s exhausted=0``."""
        if not self.exists:
            return f"{self.stream}/{self.group} absent"
        lag = "?" if self.lag is None else f"{self.lag}{'' if self.lag_exact else '+'}"
        oldest = "-" if self.oldest_pending_idle is None else f"{self.oldest_pending_idle:.1f}s"
        return f"{self.stream}/{self.group} lag={lag} pending={self.pending} oldest={oldest} exhausted={self.exhausted}"


async def group_lag(redis: Any, stream: str, group: str, max_deliveries: int) -> GroupLag:
    """Read the figures of ``group`` on ``stream`` (a redis.asyncio client; a few round trips)."""
    try:
        groups = await redis.xinfo_groups(stream)
    except Exception as exc:
        if "no such key" in str(exc):
            return GroupLag(stream, group, max_deliveries, exists=False)
        raise
    info = next((g for g in groups if _text(g.get("name")) == group), None)
    if info is None:
        return GroupLag(stream, group, max_deliveries, exists=False)
    lag = info.get("lag")
    exact = True
    if lag is None:
        lag, exact = await count_after(redis, stream, _text(info.get("last-delivered-id", "0-0")))
    pending = int(info.get("pending", 0))
    oldest: float | None = None
    exhausted = 0
    if pending:
        rows = await redis.xpending_range(stream, group, "-", "+", SCAN_LIMIT)
        if rows:
            oldest = int(rows[0]["time_since_delivered"]) / 1000
            exhausted = sum(1 for row in rows if int(row["times_delivered"]) >= max_deliveries)
    return GroupLag(
        stream,
        group,
        max_deliveries,
        lag=int(lag),
        lag_exact=exact,
        pending=pending,
        oldest_pending_idle=oldest,
        exhausted=exhausted,
        consumers=int(info.get("consumers", 0)),
    )


async def count_after(redis: Any, stream: str, last_id: str, limit: int = COUNT_LIMIT) -> tuple[int, bool]:
    """Entries of ``stream`` after ``last_id``, counted up to ``limit``; (count, whether exact)."""
    counted = 0
    start = f"({last_id}"
    while True:
        want = min(1000, limit - counted)
        if want == 0:
            # `limit` entries counted: exact only if nothing follows.
            return counted, not await redis.xrange(stream, min=start, max="+", count=1)
        page = await redis.xrange(stream, min=start, max="+", count=want)
        counted += len(page)
        if len(page) < want:
            return counted, True
        start = f"({_text(page[-1][0])}"


class LagMonitor:
    """Takes the figures of a fixed list of groups, at most once per ``max_age`` seconds."""

    def __init__(self, redis: Any, groups: Sequence[tuple[str, str, int]], max_age: float = 5.0) -> None:
        self.redis = redis
        self.groups = list(groups)  # (stream, group, max_deliveries)
        self.max_age = max_age
        self.figures: list[GroupLag] = []
        self.taken_at: float | None = None  # monotonic time of the last successful reading
        self._lock = asyncio.Lock()

    async def refresh(self) -> list[GroupLag]:
        """The figures, read again if older than ``max_age``; the last ones if Redis fails now."""
        async with self._lock:  # concurrent scrapes share one reading
            if self.taken_at is not None and time.monotonic() - self.taken_at < self.max_age:
                return self.figures
            try:
                self.figures = list(await asyncio.gather(*(group_lag(self.redis, s, g, m) for s, g, m in self.groups)))
                self.taken_at = time.monotonic()
            except Exception as exc:  # noqa: BLE001 - figures are best effort; the log says why
                log.warning("cannot read consumer-group lag: %s: %s", type(exc).__name__, exc)
            return self.figures

    async def summary(self) -> str:
        """``streams: a/g lag=... ; b/h lag=...`` for the periodic log line."""
        figures = await self.refresh()
        return "streams: " + "; ".join(f.describe() for f in figures) if figures else ""


class LagCollector(Collector):
    """Prometheus gauges from a :class:`LagMonitor` that lives on ``loop`` (scrapes run in a thread)."""

    def __init__(self, monitor: LagMonitor, loop: asyncio.AbstractEventLoop, timeout: float = 2.0) -> None:
        self.monitor = monitor
        self.loop = loop
        self.timeout = timeout

    def collect(self) -> Iterable[Metric]:
        try:
            if _running_loop() is self.loop:
                # Collected on the loop itself (generate_latest called from a coroutine): waiting for
                # the loop here would block it, so give the cached figures.
                raise RuntimeError("collected on the event loop")
            future = asyncio.run_coroutine_threadsafe(self.monitor.refresh(), self.loop)
            figures = future.result(self.timeout)
        except Exception as exc:  # noqa: BLE001 - a scrape still answers, with the last figures
            log.debug("lag figures not refreshed for this scrape: %s", type(exc).__name__)
            figures = self.monitor.figures
        labels = ["stream", "group"]
        lag = GaugeMetricFamily(
            "eventbus_stream_lag", "Entries in the stream not yet delivered to the consumer group.", labels=labels
        )
        pending = GaugeMetricFamily(
            "eventbus_stream_pending", "Entries delivered to the group but not acknowledged yet.", labels=labels
        )
        oldest = GaugeMetricFamily(
            "eventbus_stream_oldest_pending_seconds",
            "Seconds since the oldest pending entry was last delivered (0 when nothing is pending).",
            labels=labels,
        )
        exhausted = GaugeMetricFamily(
            "eventbus_stream_pending_exhausted",
            "Pending entries already delivered max_deliveries times or more (the next failure dead-letters them).",
            labels=labels,
        )
        for f in figures:
            if not f.exists:
                continue
            key = [f.stream, f.group]
            if f.lag is not None:
                lag.add_metric(key, f.lag)
            pending.add_metric(key, f.pending)
            oldest.add_metric(key, f.oldest_pending_idle or 0.0)
            exhausted.add_metric(key, f.exhausted)
        yield from (lag, pending, oldest, exhausted)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
