"""Heartbeats: what each runner writes to Redis for the dashboard, on one server, a cluster and Sentinel."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import redis.asyncio

from eventbus import Runner
from eventbus._heartbeat import INTERVAL, LATENCY_BUCKETS, TTL, percentile, read_processes
from eventbus._runner import connect
from tests.cli_process import EventbusProcess
from tests.fault.helpers import eventually
from tests.redis_server import RedisServer
from tests.sample_apps import dashboard_demo


async def _processes(url: str) -> list[dict[str, Any]]:
    async with connect(url) as bus:
        return await read_processes(bus.redis)


def test_the_gone_rule_fits_the_promise() -> None:
    # A process that stops beating is shown as gone within 30 s; its key outlives two missed beats.
    assert TTL <= 30 and TTL >= 2 * INTERVAL


def test_percentile_is_the_bucket_bound() -> None:
    buckets = [0] * (len(LATENCY_BUCKETS) + 1)
    assert percentile(buckets, 0.5) is None
    buckets[1] = 99  # <= 1 ms
    buckets[-1] = 1  # beyond the largest bound
    assert percentile(buckets, 0.5) == LATENCY_BUCKETS[1]
    assert percentile(buckets, 0.99) == LATENCY_BUCKETS[1]
    assert percentile(buckets, 1.0) == float("inf")


@pytest.fixture(params=["redis", "cluster", "sentinel"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    if request.param == "cluster":
        return str(request.getfixturevalue("redis_cluster").url)
    _, sentinel = request.getfixturevalue("redis_sentinel")
    return str(sentinel.url)


async def test_a_runner_beats_and_says_when_it_stops(url: str) -> None:
    async with Runner(dashboard_demo, url=url, grace=5.0) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish(dashboard_demo.CHANNEL, b"one")
        await eventually(lambda: runner.stats.handlers["record_order"].handled == 1, what="the message handled")
        [process] = await _processes(url)
        assert process["alive"] and process["app"] == "tests.sample_apps.dashboard_demo"
        assert {"host", "pid", "version", "hot_path", "loop", "started", "handlers"} <= process.keys()
        [handler] = process["handlers"]
        assert handler["name"] == "record_order" and handler["channels"] == [dashboard_demo.CHANNEL]
        assert handler["inbox_budget"] > 0
    [process] = await _processes(url)
    assert not process["alive"] and process["stopped"] >= process["started"]
    assert process["handlers"][0]["handled"] == 1  # the last beat has the last figures


async def test_a_forged_snapshot_is_skipped(redis_server: RedisServer) -> None:
    async with redis.asyncio.Redis.from_url(redis_server.url) as client:
        await client.hset("eventbus:{heartbeat}:processes", mapping={"x:1": b"not json", "x:2": b"[1]"})
        assert await read_processes(client) == []


@pytest.mark.slow
async def test_a_killed_runner_is_shown_as_gone(
    redis_server: RedisServer, subprocess_env: dict[str, str], tmp_path: Any
) -> None:
    proc = EventbusProcess(["run", "sample_apps.dashboard_demo", "--url", redis_server.url], subprocess_env)
    try:
        proc.wait_for("subscribed")

        async def alive() -> bool:
            found = await _processes(redis_server.url)
            return bool(found) and found[0]["alive"]

        await eventually(alive, what="the heartbeat")
        proc.signal(signal.SIGKILL)

        async def gone() -> bool:
            found = await _processes(redis_server.url)
            return not found[0]["alive"] and "stopped" not in found[0]

        # Gone once its key expires, TTL seconds after its last beat; the margin is for a loaded machine.
        await eventually(gone, timeout=TTL + 60, what="the process shown as gone")
    finally:
        proc.kill()


async def test_workers_are_numbered_as_the_logs_number_them(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    args = ["run", "sample_apps.dashboard_demo", "--url", redis_server.url, "--workers", "2"]
    proc = EventbusProcess(args, subprocess_env)
    try:
        proc.wait_for("subscribed")

        async def both() -> bool:
            return sorted(p.get("worker") or "" for p in await _processes(redis_server.url)) == ["1/2", "2/2"]

        await eventually(both, what="both workers' heartbeats")
    finally:
        proc.signal()
        proc.wait(30)
        proc.kill()
