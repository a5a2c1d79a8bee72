"""Consumer-group lag figures, the metrics and summary line built on them, and `eventbus streams`."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import urllib.request

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from eventbus import Context, StreamMessage, on_stream
from eventbus._backends import command_client
from eventbus._lag import GroupLag, LagCollector, LagMonitor, count_after, group_lag
from tests.cli_process import ROOT
from tests.fault.helpers import eventually, running
from tests.redis_server import RedisServer


def backlog(client: redis.Redis, stream: str, n: int) -> list[bytes]:
    pipe = client.pipeline()
    for i in range(n):
        pipe.xadd(stream, {"data": str(i)})
    return list(pipe.execute())


async def test_figures_of_a_real_backlog(redis_server: RedisServer, sync_redis: redis.Redis) -> None:
    ids = backlog(sync_redis, "s", 10)
    sync_redis.xgroup_create("s", "g", id="0")
    sync_redis.xreadgroup("g", "c", {"s": ">"}, count=3)  # delivered, not acknowledged
    sync_redis.xack("s", "g", ids[0])
    # ids[1] has been delivered 4 times (a handler failing, or a consumer crashing, again and again).
    sync_redis.xclaim("s", "g", "c", 0, [ids[1]], retrycount=4)
    client = command_client(redis_server.url)
    try:
        figures = await group_lag(client, "s", "g", max_deliveries=4)
        assert figures.exists and figures.lag == 7 and figures.lag_exact
        assert figures.pending == 2 and figures.exhausted == 1 and figures.consumers == 1
        assert figures.oldest_pending_idle is not None and figures.oldest_pending_idle >= 0
        assert figures.describe().startswith("s/g lag=7 pending=2 oldest=")

        # XDEL of an entry the group has not reached: Redis 7 stops reporting the lag (nil), so it
        # is counted from the group's last-delivered id instead.
        sync_redis.xdel("s", ids[5])
        assert sync_redis.xinfo_groups("s")[0]["lag"] is None
        figures = await group_lag(client, "s", "g", max_deliveries=4)
        assert (figures.lag, figures.lag_exact) == (6, True)
        assert await count_after(client, "s", ids[2].decode(), limit=4) == (4, False)
        assert await count_after(client, "s", ids[2].decode(), limit=6) == (6, True)

        assert await group_lag(client, "s", "nope", 5) == GroupLag("s", "nope", 5, exists=False)
        assert not (await group_lag(client, "missing", "g", 5)).exists
    finally:
        await client.aclose()


async def test_monitor_caches_its_figures(own_redis_server: RedisServer) -> None:
    own_redis_server.client().xgroup_create("s", "g", id="0", mkstream=True)
    client = command_client(own_redis_server.url)
    try:
        monitor = LagMonitor(client, [("s", "g", 5)], max_age=60)
        first = await monitor.refresh()
        assert first[0].lag == 0
        backlog(own_redis_server.client(), "s", 3)
        assert await monitor.refresh() is first  # cached: a burst of scrapes costs one reading
        monitor.max_age = 0
        assert (await monitor.refresh())[0].lag == 3
    finally:
        await client.aclose()


async def test_collecting_on_the_loop_gives_the_cached_figures() -> None:
    # generate_latest() called from a coroutine must not wait for the loop it is blocking.
    monitor = LagMonitor(None, [("s", "g", 5)])
    monitor.figures = [GroupLag("s", "g", 5, lag=4, pending=2, oldest_pending_idle=1.5)]
    families = {f.name: f for f in LagCollector(monitor, asyncio.get_running_loop()).collect()}
    assert families["eventbus_stream_lag"].samples[0].value == 4
    assert families["eventbus_stream_oldest_pending_seconds"].samples[0].value == 1.5


async def test_lag_metrics_and_summary_of_a_running_consumer(
    redis_server: RedisServer, sync_redis: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    backlog(sync_redis, "jobs", 50)
    release = asyncio.Event()

    @on_stream("jobs", read_count=10)
    async def worker(msg: StreamMessage, ctx: Context) -> None:
        await release.wait()  # hold the entries: they stay pending, the rest stay undelivered

    caplog.set_level(logging.INFO, logger="eventbus")
    async with running(
        [worker], redis_server.url, metrics_port=0, metrics_addr="127.0.0.1", stats_interval=0.2
    ) as runner:
        assert runner.lag is not None
        runner.lag.max_age = 0
        await eventually(lambda: any("streams: jobs/worker lag=" in r.message for r in caplog.records), what="summary")
        samples = await asyncio.to_thread(scrape, f"http://127.0.0.1:{runner.metrics.port}/metrics")  # type: ignore[union-attr]
        labels = (("group", "worker"), ("stream", "jobs"))
        pending = samples[("eventbus_stream_pending", labels)]
        # The consumer reads a batch ahead of its inbox, so 10 or 20 entries are held, not all 50.
        assert 10 <= pending < 50
        assert samples[("eventbus_stream_lag", labels)] == 50 - pending
        assert samples[("eventbus_stream_oldest_pending_seconds", labels)] >= 0
        assert samples[("eventbus_stream_pending_exhausted", labels)] == 0
        release.set()
        await eventually(lambda: runner.stats.handlers["worker"].handled == 50, what="the backlog handled")
        await eventually(lambda: sync_redis.xpending("jobs", "worker")["pending"] == 0, what="the acks")
        samples = await asyncio.to_thread(scrape, f"http://127.0.0.1:{runner.metrics.port}/metrics")  # type: ignore[union-attr]
        assert samples[("eventbus_stream_lag", labels)] == 0
        assert samples[("eventbus_stream_pending", labels)] == 0


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def eventbus(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_streams_command_shows_each_group(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    backlog(sync_redis, "ledger", 5)
    sync_redis.xgroup_create("ledger", "bookkeeper", id="0")
    sync_redis.xreadgroup("bookkeeper", "c", {"ledger": ">"}, count=2)
    result = eventbus(["streams", "tests.sample_apps.ledger", "--url", redis_server.url], subprocess_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:4] == ["STREAM", "GROUP", "LAG", "PENDING"]
    assert lines[1].split() == ["ledger", "auditors", "-", "-", "-", "-", "no", "such", "group", "yet"]
    row = lines[2].split()
    assert row[:4] == ["ledger", "bookkeeper", "3", "2"] and row[5:] == ["0", "(max", "3)", "1"]
    result = eventbus(["streams", "tests.sample_apps.ledger", "--url", redis_server.url, "--json"], subprocess_env)
    rows = {row["group"]: row for row in json.loads(result.stdout)}
    assert rows["bookkeeper"]["lag"] == 3 and rows["bookkeeper"]["pending"] == 2
    assert rows["auditors"]["exists"] is False

    result = eventbus(["streams", "tests.sample_apps.orders", "--url", redis_server.url], subprocess_env)
    assert result.returncode == 2 and "no @on_stream handlers" in result.stderr
