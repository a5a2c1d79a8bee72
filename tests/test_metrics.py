"""The Prometheus endpoint: per-handler counters and latency histograms, read at scrape time."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from eventbus import Context, Message, Reject, on
from eventbus._metrics import StatsCollector
from eventbus._stats import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, BusStats, HandlerStats
from tests.cli_process import NOT_LOCAL_ADDR, ROOT, EventbusProcess
from tests.fault.helpers import eventually, publish_all, running
from tests.redis_server import RedisServer, free_port


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_histogram_buckets_are_le_bounds() -> None:
    stats = HandlerStats()
    for seconds in (0.0001, 0.0005, 0.0006, 99.0):
        stats.observe(seconds)
    assert stats.latency_buckets[0] == 2  # 0.0001 and exactly 0.0005 (le)
    assert stats.latency_buckets[1] == 1
    assert stats.latency_buckets[len(LATENCY_BUCKETS)] == 1  # +Inf
    assert "latency_buckets" not in stats.as_dict()


def test_batches_count_their_messages_and_sizes() -> None:
    stats = HandlerStats(batching=True)
    stats.observe_batch(0.002, 500)
    stats.observe_batch(0.0004, 1)
    assert stats.handled == 501 and stats.batches == 2 and stats.batch_size_total == 501
    assert stats.batch_size_buckets[0] == 1  # a batch of one: le 1
    assert stats.batch_size_buckets[BATCH_SIZE_BUCKETS.index(500)] == 1
    assert stats.latency_buckets[LATENCY_BUCKETS.index(0.0025)] == 500  # each message waited the call
    assert stats.as_dict()["batches"] == 2 and "batches" not in HandlerStats().as_dict()


def test_batch_metric_families_only_for_batch_handlers() -> None:
    bus = BusStats(handlers={"sales": HandlerStats(batching=True), "alerts": HandlerStats()})
    bus.handlers["sales"].observe_batch(0.01, 20)
    families = {family.name: family for family in StatsCollector(bus).collect()}
    batches = families["eventbus_handler_batches"]
    assert [(s.labels, s.value) for s in batches.samples] == [({"handler": "sales"}, 1)]
    sizes = {(s.name, s.labels.get("le")): s.value for s in families["eventbus_handler_batch_size"].samples}
    assert sizes[("eventbus_handler_batch_size_bucket", "10")] == 0
    assert sizes[("eventbus_handler_batch_size_bucket", "20")] == 1
    assert sizes[("eventbus_handler_batch_size_sum", None)] == 20
    handled = {s.labels["handler"]: s.value for s in families["eventbus_handler_handled"].samples}
    assert handled == {"sales": 20, "alerts": 0}


async def test_metrics_endpoint_counts_per_handler(redis_server: RedisServer) -> None:
    @on("m", name="ok")
    async def ok(msg: Message, ctx: Context) -> None:
        await asyncio.sleep(0.002)

    @on("m", name="flaky", retries=1, backoff=0)
    async def flaky(msg: Message, ctx: Context) -> None:
        raise RuntimeError("always")

    @on("m", name="picky")
    async def picky(msg: Message, ctx: Context) -> None:
        raise Reject("no")

    async with running([ok, flaky, picky], redis_server.url, metrics_port=0, metrics_addr="127.0.0.1") as runner:
        assert runner.metrics is not None
        await publish_all(runner, "m", [b"x"] * 5)
        await eventually(lambda: runner.stats.handlers["flaky"].dead_lettered == 5, what="dead letters")
        await eventually(lambda: runner.stats.handlers["picky"].dead_lettered == 5, what="dead letters")
        assert await runner.drain(10)
        samples = await asyncio.to_thread(scrape, runner.metrics.url)

    def value(name: str, handler: str | None = None) -> float:
        labels = (("handler", handler),) if handler else ()
        return samples[(name, labels)]

    assert value("eventbus_handler_received_total", "ok") == 5
    assert value("eventbus_handler_handled_total", "ok") == 5
    assert value("eventbus_handler_latency_seconds_count", "ok") == 5
    assert value("eventbus_handler_latency_seconds_sum", "ok") > 0
    assert samples[("eventbus_handler_latency_seconds_bucket", (("handler", "ok"), ("le", "+Inf")))] == 5
    assert value("eventbus_handler_failed_total", "flaky") == 5
    assert value("eventbus_handler_retried_total", "flaky") == 5
    assert value("eventbus_handler_dead_lettered_total", "flaky") == 5
    assert value("eventbus_handler_rejected_total", "picky") == 5
    assert value("eventbus_handler_dropped_total", "ok") == 0
    assert value("eventbus_handler_inbox", "ok") == 0
    assert value("eventbus_handler_inbox_bytes", "ok") == 0
    assert value("eventbus_reading_paused") == 0
    assert value("eventbus_messages_total") == 5  # one read, routed to three handlers
    assert value("eventbus_reconnects_total") == 0
    assert value("eventbus_requests_sent_total") == 0
    assert value("eventbus_requests_late_replies_total") == 0
    assert value("eventbus_gap_seconds_total") == 0
    assert value("eventbus_output_buffer_closes_total") == 0
    assert value("eventbus_connected") == 1


def test_cli_metrics_port_and_summary_line(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    port = free_port()
    proc = EventbusProcess(
        ["run", "tests.sample_apps.orders", "--url", redis_server.url, "--metrics-port", str(port),
         "--metrics-addr", "127.0.0.1", "--stats-interval", "0.2"],
        subprocess_env,
    )  # fmt: skip
    try:
        proc.wait_for(rf"Prometheus metrics at http://127.0.0.1:{port}/metrics")
        proc.wait_for("subscribed to")
        with redis_server.client() as client:
            client.publish("purchase_orders", b"42")
        proc.wait_for(r"stats: messages=1 received=1 handled=1")
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
        assert samples[("eventbus_handler_handled_total", (("handler", "count"),))] == 1
        assert samples[("eventbus_connected", ())] == 1
    finally:
        proc.signal()
        assert proc.wait() == 0


def test_cli_metrics_port_in_use_is_one_line_and_exit_1(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """Two runners given the same port: a runtime conflict (exit 1), not a usage error (2)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "eventbus", "run", "tests.sample_apps.orders", "--url", redis_server.url,
             "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"],
            capture_output=True, text=True, timeout=60, env=subprocess_env, cwd=ROOT,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"eventbus: error: cannot serve metrics on 127.0.0.1:{port}: port {port} is already in use by another "
        "process (another runner? give each its own port, or 0 for a free one)"
    )
    assert "Traceback" not in result.stderr


def test_cli_metrics_address_not_local_is_a_usage_error(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "eventbus", "run", "tests.sample_apps.orders", "--url", redis_server.url,
         "--metrics-port", "0", "--metrics-addr", NOT_LOCAL_ADDR],
        capture_output=True, text=True, timeout=60, env=subprocess_env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert f"eventbus: error: cannot serve metrics on {NOT_LOCAL_ADDR}:0: " in result.stderr
