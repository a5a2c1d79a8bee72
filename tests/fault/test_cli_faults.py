"""The CLI process itself through a half-open outage: it logs the loss and the gap, and goes on."""

from __future__ import annotations

import signal

import pytest

from tests.cli_process import EventbusProcess
from tests.loops import needs_uvloop
from tests.redis_server import RedisServer

pytestmark = pytest.mark.fault


@pytest.mark.parametrize("loop", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_cli_survives_a_stopped_server(
    loop: str, own_redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    proc = EventbusProcess(
        ["run", "tests.sample_apps.orders", "--url", own_redis_server.url, "--ping-interval", "0.2",
         "--ping-timeout", "0.5", "--stats-interval", "0", "--loop", loop],
        subprocess_env,
    )  # fmt: skip
    try:
        proc.wait_for(rf"subscribed to .*\(event loop: {loop}")
        own_redis_server.pause()
        try:
            proc.wait_for(r"no answer to PING within 0\.5s \(half-open connection\?\)\); reconnecting\. "
                          r"Pub/sub is at-most-once")  # fmt: skip
            # Attempts into the stopped server time out, and say so.
            proc.wait_for(r"reconnect attempt 1 to redis://127\.0\.0\.1:\d+/0 failed: TimeoutError")
        finally:
            own_redis_server.resume()
        proc.wait_for(r"reconnected to redis://127\.0\.0\.1:\d+/0 after a gap of \d+\.\ds")
        with own_redis_server.client() as client:
            for i in range(20):
                client.publish("purchase_orders", str(i))
            proc.signal(signal.SIGTERM)
            assert proc.wait() == 0
            assert client.lrange("orders", 0, -1) == [str(i).encode() for i in range(20)]
        assert "reconnects=1" in proc.output  # the shutdown summary counts it
        assert "Traceback" not in proc.output
    finally:
        proc.kill()
