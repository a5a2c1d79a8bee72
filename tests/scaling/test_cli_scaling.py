"""The CLI's stream and sharded publishing, and the supervisor's argument handling."""

from __future__ import annotations

import subprocess
import sys

from eventbus.supervisor import option_value, strip_option
from tests.redis_server import RedisServer


def test_publish_to_a_stream_with_a_cap(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    for i in range(3):
        done = subprocess.run(
            [sys.executable, "-m", "eventbus", "publish", "--stream", "orders", f"o{i}", "--maxlen", "2",
             "--url", redis_server.url],
            env=subprocess_env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "appended 1 entry to stream 'orders'" in done.stdout
    with redis_server.client() as client:
        entries = client.xrange("orders")
    assert [fields[b"data"] for _, fields in entries] == [b"o1", b"o2"]  # the CLI trims exactly


def test_publish_sharded(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    with redis_server.client() as client:
        pubsub = client.pubsub()
        pubsub.execute_command("SSUBSCRIBE", "s1")
        done = subprocess.run(
            [sys.executable, "-m", "eventbus", "publish", "--sharded", "s1", "hi", "--url", redis_server.url],
            env=subprocess_env, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "1 reception(s)" in done.stdout
        pubsub.close()


def test_supervisor_argv_helpers() -> None:
    argv = ["run", "mod", "--workers", "3", "--metrics-port=9000", "--url", "u"]
    assert strip_option(argv, "--workers") == ["run", "mod", "--metrics-port=9000", "--url", "u"]
    assert strip_option(argv, "--metrics-port") == ["run", "mod", "--workers", "3", "--url", "u"]
    assert option_value(argv, "--metrics-port") == "9000"
    assert option_value(argv, "--url") == "u"
    assert option_value(argv, "--grace") is None


def test_supervisor_gives_up_on_a_worker_usage_error(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    """Exit code 2 (here: its metrics port is taken) repeats on every restart: stop, don't loop."""
    import socket

    with socket.socket() as first, socket.socket() as second:
        first.bind(("127.0.0.1", 0))
        first.listen()
        port = first.getsockname()[1]
        second.bind(("127.0.0.1", port + 1))
        second.listen()
        done = subprocess.run(
            [sys.executable, "-m", "eventbus", "run", "tests.sample_apps.orders", "--workers", "2",
             "--url", redis_server.url, "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"],
            env=subprocess_env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "usage or load error (code 2): not restarting it" in done.stderr
    assert "restarting it in" not in done.stderr
