"""Prometheus metrics, read from the runner's plain counters at scrape time.

The hot path only bumps integers in :mod:`eventbus._stats`; this collector turns them into metric
families when Prometheus asks, so a message costs no prometheus-client call at all. The endpoint
is prometheus-client's own HTTP server (a daemon thread) on a private registry, so several
runners in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from eventbus._health import Probes, serve
from eventbus._settings import DEFAULT_METRICS_ADDR
from eventbus._stats import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, BusStats

log = logging.getLogger("eventbus.metrics")

# HandlerStats field -> help text; each becomes eventbus_handler_<field>_total{handler="..."}.
HANDLER_COUNTERS: Mapping[str, str] = {
    "received": "Messages routed to the handler's inbox (or refused before it).",
    "handled": "Messages the handler processed successfully.",
    "failed": "Messages whose last attempt raised (then dead-lettered).",
    "retried": "Retries after a handler failure.",
    "dropped": "Messages refused by a full inbox (per the handler's overflow policy).",
    "dead_lettered": "Messages written to the dead-letter stream.",
    "dead_letter_failed": "Failed or rejected messages whose dead letter could not be written (lost, for pub/sub).",
    "rejected": "Messages refused by Reject, an invalid payload, or the size cap.",
    "abandoned": "Messages still queued or running when the shutdown grace period ran out.",
}

# RequestStats field -> help text; each becomes eventbus_requests_<field>_total.
REQUEST_COUNTERS: Mapping[str, str] = {
    "sent": "Requests this process published (bus.request, ctx.request).",
    "answered": "Requests that got their reply (request) or gathered their replies (request_all).",
    "timeouts": "Requests that got no reply within their timeout.",
    "no_responder": "Requests that no subscriber received (PUBLISH counted none).",
    "remote_errors": "Replies that carried the responder's error.",
    "interrupted": "Requests failed because the reply connection was lost while they waited.",
    "late_replies": "Replies dropped because their request was already answered or had given up.",
    "replies_sent": "Replies this process's handlers published.",
    "reply_failures": "Replies this process's handlers could not publish (logged).",
}

Depths = Callable[[], Mapping[str, int]]


class StatsCollector(Collector):
    """Exposes a :class:`BusStats` (and optionally inbox depths and connection state) to Prometheus."""

    def __init__(
        self,
        stats: BusStats,
        *,
        inbox_depths: Depths | None = None,
        inbox_bytes: Depths | None = None,
        connected: Callable[[], bool] | None = None,
        reading_paused: Callable[[], bool] | None = None,
    ) -> None:
        self.stats = stats
        self.inbox_depths = inbox_depths
        self.inbox_bytes = inbox_bytes
        self.connected = connected
        self.reading_paused = reading_paused

    def collect(self) -> Iterable[Metric]:
        stats = self.stats
        # Runs in the HTTP server's thread while the loop mutates the counters: reading an int is
        # atomic under the GIL, and a scrape a few messages stale is fine.
        handlers = list(stats.handlers.items())
        yield from _counter_families("eventbus_handler", "handler", HANDLER_COUNTERS, handlers)
        latency = HistogramMetricFamily(
            "eventbus_handler_latency_seconds",
            "Time spent in the handler for each successfully handled message.",
            labels=["handler"],
        )
        bounds = [*(repr(b) for b in LATENCY_BUCKETS), "+Inf"]
        for name, handler_stats in handlers:
            latency.add_metric([name], _cumulative(bounds, handler_stats.latency_buckets), handler_stats.latency_total)
        yield latency
        batching = [(name, s) for name, s in handlers if s.batching]
        if batching:
            batches = CounterMetricFamily(
                "eventbus_handler_batches", "Calls of a batch handler, each with one batch.", labels=["handler"]
            )
            sizes = HistogramMetricFamily(
                "eventbus_handler_batch_size",
                "Messages in each batch a batch handler was called with.",
                labels=["handler"],
            )
            size_bounds = [*(str(b) for b in BATCH_SIZE_BUCKETS), "+Inf"]
            for name, handler_stats in batching:
                batches.add_metric([name], handler_stats.batches)
                buckets = _cumulative(size_bounds, handler_stats.batch_size_buckets)
                sizes.add_metric([name], buckets, handler_stats.batch_size_total)
            yield batches
            yield sizes
        if self.inbox_depths is not None:
            depth = GaugeMetricFamily("eventbus_handler_inbox", "Messages waiting in the inbox.", labels=["handler"])
            for name, value in self.inbox_depths().items():
                depth.add_metric([name], value)
            yield depth
        if self.inbox_bytes is not None:
            used = GaugeMetricFamily(
                "eventbus_handler_inbox_bytes",
                "Bytes the waiting messages count against the inbox's memory budget.",
                labels=["handler"],
            )
            for name, value in self.inbox_bytes().items():
                used.add_metric([name], value)
            yield used
        yield CounterMetricFamily(
            "eventbus_messages", "Messages read from the subscription connection.", stats.messages
        )
        yield CounterMetricFamily("eventbus_unrouted", "Messages no handler was subscribed to.", stats.unrouted)
        yield CounterMetricFamily("eventbus_oversized", "Messages over the payload size cap.", stats.oversized)
        yield CounterMetricFamily(
            "eventbus_dead_letters_trimmed",
            "Oldest dead letters removed to keep the dead-letter stream within its byte budget and entry cap.",
            stats.dead_letters_trimmed,
        )
        yield CounterMetricFamily(
            "eventbus_reconnects", "Reconnections of the subscription connection.", stats.reconnects
        )
        for field, doc in REQUEST_COUNTERS.items():
            yield CounterMetricFamily(f"eventbus_requests_{field}", doc, getattr(stats.requests, field))
        yield CounterMetricFamily(
            "eventbus_output_buffer_closes",
            "Reconnections most likely caused by Redis's client-output-buffer-limit pubsub (a message or "
            "backlog over 32 MB by default); each lost at least the message that passed it.",
            stats.output_buffer_closes,
        )
        yield CounterMetricFamily(
            "eventbus_gap_seconds",
            "Seconds without a subscription connection (pub/sub messages of that time are lost).",
            stats.gap_seconds,
        )
        yield from _recovery_metrics(stats)
        if self.connected is not None:
            yield GaugeMetricFamily(
                "eventbus_connected", "1 while the subscription connection is up.", float(self.connected())
            )
        if self.reading_paused is not None:
            yield GaugeMetricFamily(
                "eventbus_reading_paused",
                '1 while reading is paused because an overflow="pause" handler is over its budget.',
                float(self.reading_paused()),
            )


def _cumulative(bounds: list[str], counts: list[int]) -> list[tuple[str, float]]:
    """Prometheus's cumulative ``le`` buckets from per-bucket counts (a copy: the loop goes on counting)."""
    total, buckets = 0, []
    for bound, count in zip(bounds, list(counts), strict=True):
        total += count
        buckets.append((bound, float(total)))
    return buckets


RECOVERY_COUNTERS = {
    "recovered": "Missed messages of a recoverable channel read back from its history and delivered.",
    "unrecovered": "Missed messages of a recoverable channel its history no longer had (trimmed or expired).",
    "history_lost": "Gaps after which a recoverable channel's history was gone (a new epoch): an unknown number lost.",
    "foreign": "Messages on a recoverable channel published without its history (a plain PUBLISH): unrecoverable.",
    "duplicates": "Messages of a recoverable channel that arrived twice (live and recovered) and were skipped.",
    "recoveries": "Reads of a recoverable channel's history after a gap.",
    "resumed": "Messages published while a resumed handler was down, delivered to it after its restart.",
    "unclean_resumes": "Resumes after a crash: what was handled in the last save interval before it is handled again.",
}


def _counter_families(
    prefix: str, label: str, counters: Mapping[str, str], subjects: Sequence[tuple[str, object]]
) -> Iterable[Metric]:
    """One counter family per field of ``counters``, a sample per subject (a handler, a channel)."""
    for field, doc in counters.items():
        family = CounterMetricFamily(f"{prefix}_{field}", doc, labels=[label])
        for name, subject_stats in subjects:
            family.add_metric([name], getattr(subject_stats, field))
        yield family


def _recovery_metrics(stats: BusStats) -> Iterable[Metric]:
    channels = list(stats.channels.items())
    yield from _counter_families("eventbus_channel", "channel", RECOVERY_COUNTERS, channels)
    seconds = CounterMetricFamily(
        "eventbus_channel_recovery_seconds",
        "Time from a gap's detection to its missed messages delivered, summed over recoveries.",
        labels=["channel"],
    )
    for name, channel_stats in channels:
        seconds.add_metric([name], channel_stats.recovery_seconds)
    yield seconds


class MetricsServer:
    """The HTTP endpoint of one runner: ``/metrics``, and ``/healthz`` / ``/readyz`` given ``probes``."""

    def __init__(
        self, collector: StatsCollector, port: int, addr: str = DEFAULT_METRICS_ADDR, probes: Probes | None = None
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(collector)
        self._server: WSGIServer
        self._thread: Thread
        self._server, self._thread = serve(self.registry, probes, port, addr)
        self.addr = addr
        self.port: int = self._server.server_port

    @property
    def url(self) -> str:
        return f"http://{self.addr}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
