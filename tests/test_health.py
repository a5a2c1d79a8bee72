"""/healthz and /readyz on the metrics port, against real redis-server processes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from eventbus import Context, Message, on
from eventbus._health import LoopUnresponsive, Probes, call_on_loop
from tests.fault.helpers import eventually, publish_all, running
from tests.redis_server import RedisServer


def probe(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return bytes(response.read())


def base(runner: Any) -> str:
    return f"http://127.0.0.1:{runner.metrics.port}"


async def test_a_blocked_loop_fails_healthz_and_recovers(redis_server: RedisServer) -> None:
    blocking = threading.Event()

    @on("block")
    async def sleeper(msg: Message, ctx: Context) -> None:
        blocking.set()
        time.sleep(1.5)  # noqa: ASYNC251 - the bug the probe exists for: blocking in an async handler

    async with running(
        [sleeper], redis_server.url, metrics_port=0, metrics_addr="127.0.0.1", health_deadline=0.3
    ) as runner:
        code, body = await asyncio.to_thread(probe, base(runner) + "/healthz")
        assert code == 200 and body["status"] == "ok" and body["loop_delay_ms"] >= 0

        def probe_while_blocked() -> tuple[tuple[int, dict[str, Any]], tuple[int, dict[str, Any]]]:
            assert blocking.wait(10)
            return probe(base(runner) + "/healthz"), probe(base(runner) + "/readyz")

        # The thread starts before the handler blocks the loop; it probes once it is blocked.
        probing = asyncio.ensure_future(asyncio.to_thread(probe_while_blocked))
        await publish_all(runner, "block", [b"x"])
        (code, body), (ready_code, ready_body) = await probing
        assert code == 503 and body["status"] == "unhealthy"
        assert "did not answer within 0.3s" in body["reason"]
        assert ready_code == 503 and "did not answer" in ready_body["reasons"][0]
        assert await runner.drain(10)
        code, body = await asyncio.to_thread(probe, base(runner) + "/healthz")
        assert code == 200


async def test_readyz_fails_while_redis_is_down_and_recovers(own_redis_server: RedisServer) -> None:
    @on("c")
    async def handler(msg: Message, ctx: Context) -> None:
        pass

    async with running([handler], own_redis_server.url, metrics_port=0, metrics_addr="127.0.0.1") as runner:
        assert await asyncio.to_thread(probe, base(runner) + "/readyz") == (200, {"status": "ready"})
        own_redis_server.kill()
        await eventually(lambda: not runner.subscriber.is_connected(), what="the connection lost")  # type: ignore[union-attr]
        code, body = await asyncio.to_thread(probe, base(runner) + "/readyz")
        assert code == 503 and body["status"] == "not ready"
        assert body["reasons"] == ["subscription connection down (reconnecting and resubscribing)"]
        # Alive all the same: the orchestrator must not restart a process that is reconnecting.
        assert (await asyncio.to_thread(probe, base(runner) + "/healthz"))[0] == 200
        await asyncio.to_thread(own_redis_server.start)
        await eventually(lambda: runner.stats.reconnects >= 1, what="the reconnect")
        assert await asyncio.to_thread(probe, base(runner) + "/readyz") == (200, {"status": "ready"})
        # /metrics is still served by the same endpoint.
        metrics = await asyncio.to_thread(fetch, base(runner) + "/metrics")
        assert b"eventbus_connected 1.0" in metrics


async def test_readyz_covers_stream_groups(own_redis_server: RedisServer) -> None:
    from eventbus import on_stream

    @on_stream("orders", block=0.2)
    async def orders(msg: Message, ctx: Context) -> None:
        pass

    async with running([orders], own_redis_server.url, metrics_port=0, metrics_addr="127.0.0.1") as runner:
        url = base(runner) + "/readyz"
        assert await asyncio.to_thread(probe, url) == (200, {"status": "ready"})
        # An outage with a stream reader blocked in XREADGROUP; the runner must still stop after it
        # (redis-py once swallowed the reader's cancellation here and the stop hung).
        own_redis_server.kill()
        await eventually(lambda: not runner.subscriber.is_connected(), what="the connection lost")  # type: ignore[union-attr]
        assert (await asyncio.to_thread(probe, url))[0] == 503
        await asyncio.to_thread(own_redis_server.start)
        deadline = time.monotonic() + 20
        while (await asyncio.to_thread(probe, url))[0] != 200:
            assert time.monotonic() < deadline, "never ready again"
            await asyncio.sleep(0.05)
        # A reader whose retries ran out (redis-py rides out a short outage itself, ~8 s) says so;
        # the subscription connection reports an outage first. Asked in the same loop step as the
        # flag is set: the reader's own loop sets it again on its next successful read, which an
        # HTTP round trip from a thread could let happen first on a busy machine.
        consumer = runner.consumers[0]
        consumer.reading = False
        assert runner.readiness() == ["stream 'orders' group 'orders' not reading (retrying)"]
        consumer.reading = True
        assert runner.readiness() == []
    assert not consumer.reading  # stopped reading on the way out


async def test_readiness_asks_every_source(own_redis_server: RedisServer) -> None:
    @on("c")
    async def plain(msg: Message, ctx: Context) -> None:
        pass

    @on("s", sharded=True)
    async def sharded(msg: Message, ctx: Context) -> None:
        pass

    down = [
        "subscription connection down (reconnecting and resubscribing)",
        f"sharded subscription to {own_redis_server.url} down (reconnecting)",
    ]
    async with running([plain, sharded], own_redis_server.url) as runner:
        assert runner.readiness() == []
        own_redis_server.kill()
        await eventually(lambda: runner.readiness() == down, what="both connections reported down")
        await asyncio.to_thread(own_redis_server.start)
        await eventually(lambda: runner.readiness() == [], what="both connections back")
    assert runner.readiness() == ["stopping"]


async def test_probes_before_start_and_while_stopping() -> None:
    loop = asyncio.get_running_loop()
    reasons: list[str] = ["starting"]
    probes = Probes(loop, lambda: reasons, deadline=5)
    assert await asyncio.to_thread(probes.readyz) == (503, {"status": "not ready", "reasons": ["starting"]})
    reasons.clear()
    assert await asyncio.to_thread(probes.readyz) == (200, {"status": "ready"})


def test_a_closed_loop_is_unresponsive() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(LoopUnresponsive, match="closed"):
        call_on_loop(loop, lambda: None, 1)
    assert Probes(loop, list, deadline=1).healthz()[0] == 503
