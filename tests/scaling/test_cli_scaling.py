"""The CLI's stream and sharded publishing, and `run --workers`: its processes, arguments and signals."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

from eventbus._cli import worker_argv
from tests.cli_process import NOT_LOCAL_ADDR, EventbusProcess, children, descendants, hangups_reach_children, needs_proc
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


def test_worker_arguments_are_the_users_own_marked_after_run() -> None:
    argv = ["run", "mod", "--workers=3", "--metrics-port", "9000", "--", "x"]
    assert worker_argv(argv, 1, 3) == ["run", "--as-worker", "2/3", *argv[1:]]
    assert worker_argv(argv, 0, 3, "redis://127.0.0.1:7/0")[:5] == [
        "run", "--as-worker", "1/3", "--url", "redis://127.0.0.1:7/0"
    ]  # fmt: skip


def test_supervisor_gives_up_on_a_worker_usage_error(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    """Exit code 2 (here: a metrics address no interface has) repeats on every restart: stop, don't loop."""
    done = subprocess.run(
        [sys.executable, "-m", "eventbus", "run", "tests.sample_apps.orders", "--workers", "2",
         "--url", redis_server.url, "--metrics-port", "0", "--metrics-addr", NOT_LOCAL_ADDR],
        env=subprocess_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "usage or load error (code 2): not restarting it" in done.stderr
    assert "restarting it in" not in done.stderr


@needs_proc
@pytest.mark.parametrize("spelling", [["--workers", "2"], ["--workers=2"], ["--log-level=INFO", "--workers", "2"]])
def test_workers_2_is_two_workers_under_one_supervisor(
    spelling: list[str], redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """Each worker runs as one, whatever its argv says about --workers: no worker supervises."""
    proc = EventbusProcess(["run", "tests.sample_apps.orders", "--url", redis_server.url, *spelling], subprocess_env)
    try:
        proc.wait_for(r"\[worker 1/2\] eventbus: .*subscribed to")
        proc.wait_for(r"\[worker 2/2\] eventbus: .*subscribed to")
        workers = children(proc.process.pid)
        assert len(workers) == 2, proc.output
        assert descendants(proc.process.pid) == workers  # and nothing below them
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output
    finally:
        proc.kill()


@hangups_reach_children
def test_sighup_to_the_supervisor_drains_every_worker(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """A closed terminal: the supervisor forwards it as SIGTERM; each worker drains and runs its hooks."""
    proc = EventbusProcess(
        ["run", "tests.sample_apps.slow", "--workers", "2", "--url", redis_server.url], subprocess_env
    )
    try:
        proc.wait_for(r"\[worker 1/2\] eventbus: .*subscribed to")
        proc.wait_for(r"\[worker 2/2\] eventbus: .*subscribed to")
        with redis_server.client() as client:
            client.publish("slow", "a")  # both workers get it (pub/sub runs in every worker)
            proc.wait_for(r"(?s)slow handler started on a.*slow handler started on a")
            proc.signal(signal.SIGHUP)
            assert proc.wait() == 0, proc.output
            assert client.lrange("slow:done", 0, -1) == [b"a", b"a"]
            assert client.llen("slow:stopped") == 2  # each worker's shutdown hook
        assert "all workers stopped" in proc.output
        assert proc.output.count("all queued work finished") == 2
    finally:
        proc.kill()
