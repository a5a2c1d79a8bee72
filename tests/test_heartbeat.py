"""Heartbeats: what each runner writes to Redis for the dashboard, on one server, a cluster and Sentinel."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import redis
import redis.asyncio

from eventbus import Channel, Context, Message, Runner, on
from eventbus._heartbeat import (
    CHANNELS_SENT,
    INTERVAL,
    LATENCY_BUCKETS,
    TTL,
    alive_key,
    percentile,
    read_processes,
    recovery_counters,
)
from eventbus._runner import connect
from eventbus._stats import BusStats
from tests.cli_process import EventbusProcess
from tests.fault.helpers import eventually
from tests.histories import append_unpublished
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
        proc.wait(10)

        async def gone() -> bool:
            found = await _processes(redis_server.url)
            return not found[0]["alive"] and "stopped" not in found[0]

        # Gone once its key expires, TTL seconds after its last beat: the killed process left the
        # key with that expiry and will never renew it, so its expiry is brought forward here
        # rather than waited for (the test would otherwise sit out TTL seconds).
        [process] = await _processes(redis_server.url)
        with redis.Redis.from_url(redis_server.url) as admin:
            key = alive_key(process["id"])
            assert 0 < admin.ttl(key) <= TTL
            assert not await gone()
            admin.pexpire(key, 1)
        await eventually(gone, what="the process shown as gone")
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


async def test_recovery_counters_travel_in_the_heartbeat(redis_server: RedisServer) -> None:
    orders = Channel("hb-orders", history=100)
    seen: list[int] = []

    @on(orders, resume=True)
    async def tally(msg: Message, ctx: Context) -> None:
        seen.append(int(msg.text))

    @on("hb-plain")
    async def plain(msg: Message, ctx: Context) -> None:
        pass

    runner = Runner([tally, plain], url=redis_server.url, grace=5.0)
    runner.heartbeat_interval = 0.1
    async with runner:
        assert runner.publisher is not None
        for n in (1, 2):
            await runner.publisher.publish(orders, n)
        await eventually(lambda: len(seen) == 2, what="two messages")
        # Two messages that never arrived: the next one's offset says so; the history has one of them.
        with redis.Redis.from_url(redis_server.url) as admin:
            assert append_unpublished(admin, orders.name, b"4", offset=4) == 4
        await runner.publisher.publish(orders, 5)
        await eventually(lambda: seen[-1:] == [5], what="the message after the jump")

        async def counted() -> dict[str, Any]:
            [process] = await _processes(redis_server.url)
            return dict(process["channels"].get(orders.name, {}))

        async def recovered() -> bool:
            return "recovered" in await counted()

        await eventually(recovered, what="the recovery in a beat")
        counters = await counted()
        assert counters["recovered"] == 1 and counters["unrecovered"] == 1 and counters["recoveries"] == 1
        assert "history_lost" not in counters  # only the counters that are not 0
        [process] = await _processes(redis_server.url)
        assert process["channels_total"] == 1 and list(process["channels"]) == [orders.name]
        by_name = {h["name"]: h for h in process["handlers"]}
        assert by_name["tally"]["recovers"] and by_name["tally"]["resumes"]
        assert not by_name["plain"]["recovers"] and not by_name["plain"]["resumes"]


def test_a_beat_carries_a_bounded_number_of_channels() -> None:
    stats = BusStats()
    for index in range(CHANNELS_SENT + 5):
        stats.recovery(f"c{index:04d}").foreign = index
    sent = recovery_counters(stats.channels)
    assert list(sent) == sorted(stats.channels)[:CHANNELS_SENT]
    assert sent["c0000"] == {} and sent["c0003"] == {"foreign": 3}
