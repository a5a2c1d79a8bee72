"""The CLI's stream and sharded publishing, and `run --workers`: its processes, arguments and signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import replace

import pytest

from eventbus._cli import main, worker_arguments, worker_settings
from eventbus._settings import settings_from
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


def test_a_worker_gets_its_module_and_number_as_arguments_and_everything_else_handed_over() -> None:
    assert worker_arguments("mod:router", 1, 3) == ["run", "mod:router", "--as-worker", "2/3"]
    settings = settings_from(
        url="redis://u:pw@h:1/0", url_source="--url", grace=3.0, metrics_port=9000, middleware=["m:f"], embedded=False
    )
    handed = json.loads(worker_settings(settings, 2, "asyncio"))
    assert handed["loop"] == "asyncio"
    # Each worker its own metrics port, consecutive; the rest as the supervisor resolved it.
    assert settings_from(**handed["settings"]) == replace(settings, metrics_port=9002, middleware=("m:f",))
    assert json.loads(worker_settings(replace(settings, metrics_port=0), 2, "auto"))["settings"]["metrics_port"] == 0


def test_a_worker_takes_no_options_and_is_started_by_a_supervisor_only(capsys: pytest.CaptureFixture[str]) -> None:
    """A worker never supervises: it has no options of its own, and refuses to run without a supervisor."""
    for argv, error in [
        (["run", "tests.sample_apps.orders", "--as-worker", "1/2", "--workers", "3"], "give no other option"),
        (["run", "tests.sample_apps.orders", "--as-worker", "1/2"], "not by hand"),
    ]:
        assert main(argv) == 2
        lines = capsys.readouterr().err.splitlines()
        assert len(lines) == 1 and error in lines[0], lines


@needs_proc
def test_a_workers_argv_and_environment_hold_no_secret(
    own_redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """The supervisor hands the URL (and every other setting) over through a pipe: `ps` shows no password."""
    with own_redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "svc", "on", ">pw-s3cret", "~*", "&*", "+@all")
    url = f"redis://svc:pw-s3cret@127.0.0.1:{own_redis_server.port}/0"
    proc = EventbusProcess(
        ["run", "tests.sample_apps.orders", "--workers", "2", "--url", url, "--grace", "3", "--log-level", "debug"],
        subprocess_env,
    )
    try:
        proc.wait_for(r"\[worker 1/2\] eventbus: .*subscribed to")
        proc.wait_for(r"\[worker 2/2\] eventbus: .*subscribed to")
        workers = children(proc.process.pid)
        assert len(workers) == 2, proc.output
        for pid in workers:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                argv = cmdline.read().split(b"\0")[:-1]
            with open(f"/proc/{pid}/environ", "rb") as environ:
                env = environ.read()
            assert argv[-4:-1] == [b"run", b"tests.sample_apps.orders", b"--as-worker"], argv
            assert b"s3cret" not in b" ".join(argv) and b"s3cret" not in env
        # What was handed over is what they run with: the URL, where it came from, the log level, the grace.
        proc.wait_for(r"\[worker 2/2\] eventbus: connecting to Redis at redis://svc:\*\*\*@.* \(from --url\)")
        proc.wait_for(r"DEBUG +\[worker 1/2\] eventbus: handler count: concurrency=1")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0, proc.output
        assert proc.output.count("finishing queued work for up to 3.0s") == 2, proc.output
        assert "s3cret" not in proc.output
    finally:
        proc.kill()


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
