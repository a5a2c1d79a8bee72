"""The first hour of a new user: URL mistakes, refused credentials, logs, running from code.

Real redis-server processes and real ``python -m eventbus`` subprocesses, as a user runs them.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from eventbus import Runner, on
from tests.cli_process import ROOT, EventbusProcess
from tests.redis_server import RedisServer

SAMPLE = "tests.sample_apps.orders"


@pytest.fixture
def processes() -> Iterator[list[EventbusProcess]]:
    started: list[EventbusProcess] = []
    yield started
    for process in started:
        process.kill()


def cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def stop(process: EventbusProcess) -> str:
    process.signal(signal.SIGTERM)
    assert process.wait() == 0, process.output
    return process.output


# -- URL mistakes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis:/otherhost:7000/3", "expected redis:// (two slashes)"),
        ("redis://localhost:abc/0", "invalid port 'abc'"),
        ("redis://:s3cret@localhost:abc/0", "invalid port 'abc'"),
        ("redis://localhost:6379/x", "invalid database number 'x'"),
        ("mysql://localhost", "unsupported scheme 'mysql'"),
    ],
)
@pytest.mark.parametrize("command", ["run", "publish"])
def test_a_malformed_url_is_one_line_and_exit_2(
    url: str, named: str, command: str, subprocess_env: dict[str, str]
) -> None:
    args = ["run", SAMPLE] if command == "run" else ["publish", "ch", "x"]
    result = cli([*args, "--url", url], subprocess_env)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("eventbus: error: invalid Redis URL")
    assert named in result.stderr and "s3cret" not in result.stderr
    assert "connecting" not in result.stderr  # nothing was tried, let alone localhost


def test_a_malformed_environment_url_names_its_source(subprocess_env: dict[str, str]) -> None:
    result = cli(["run", SAMPLE], {**subprocess_env, "EVENTBUS_URL": "redis//localhost"})
    assert result.returncode == 2 and "from $EVENTBUS_URL" in result.stderr, result.stderr


# -- refused credentials ---------------------------------------------------------------------


def with_password(server: RedisServer, auth: str) -> str:
    return server.url.replace("redis://", f"redis://{auth}@")


def test_a_password_the_server_does_not_have_is_one_line(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    result = cli(["run", SAMPLE, "--url", with_password(redis_server, ":s3cret"), "--no-embedded"], subprocess_env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("eventbus: error:")]
    assert len(errors) == 1 and "no password set for user 'default'" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


def test_a_wrong_password_or_none_names_the_user(own_redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    with own_redis_server.client() as client:
        client.config_set("requirepass", "right")
    wrong = cli(["publish", "ch", "x", "--url", with_password(own_redis_server, "bob:wrong")], subprocess_env)
    assert wrong.returncode == 1 and "refused the password of user 'bob'" in wrong.stderr, wrong.stderr
    assert "wrong" not in wrong.stderr.replace("a wrong password", "") and "Traceback" not in wrong.stderr
    missing = cli(["run", SAMPLE, "--url", own_redis_server.url], subprocess_env)
    assert missing.returncode == 1 and "requires a password" in missing.stderr, missing.stderr
    assert "Traceback" not in missing.stderr
    own_redis_server.stop()  # its client() has no password: stop it here rather than in the fixture


# -- the log names the URL in use and where it came from ------------------------------------


def test_the_log_names_the_source_of_the_url(
    redis_server: RedisServer, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    from_env = EventbusProcess(["run", SAMPLE], {**subprocess_env, "EVENTBUS_URL": redis_server.url})
    processes.append(from_env)
    from_env.wait_for(rf"connecting to Redis at {re.escape(redis_server.url)} \(from \$EVENTBUS_URL\)")
    from_env.wait_for("subscribed")
    stop(from_env)


# -- logs ------------------------------------------------------------------------------------


def test_log_level_in_any_case_and_debug_follows_the_subscriptions(
    redis_server: RedisServer, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    process = EventbusProcess(["run", SAMPLE, "--url", redis_server.url, "--log-level", "DEBUG"], subprocess_env)
    processes.append(process)
    process.wait_for(r"DEBUG +eventbus.redis: subscriptions confirmed on .*'purchase_orders'")
    process.wait_for(r"DEBUG +eventbus: handler count: concurrency=1")
    stop(process)
    quiet = cli(["run", SAMPLE, "--url", redis_server.url, "--log-level", "Loud"], subprocess_env)
    assert quiet.returncode == 2 and "use one of debug, info, warning, error" in quiet.stderr


def test_workers_tag_their_log_lines(
    redis_server: RedisServer, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    process = EventbusProcess(["run", SAMPLE, "--url", redis_server.url, "--workers", "2"], subprocess_env)
    processes.append(process)
    process.wait_for(r"\[worker 1/2\] eventbus: .* subscribed")
    process.wait_for(r"\[worker 2/2\] eventbus: .* subscribed")
    assert re.search(r"worker 1/2 started \(pid \d+\)", process.output)
    stop(process)


@on("flaky", retries=2, backoff=0.01)
async def always_fails(msg: object, ctx: object) -> None:
    raise RuntimeError("boom")


async def test_a_failure_logs_its_traceback_once(redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="eventbus")
    async with Runner([always_fails], url=redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish("flaky", "x")
        for _ in range(500):
            if runner.stats.handlers["always_fails"].failed:
                break
            await runner.drain(0.01)
    final = [r for r in caplog.records if "after 3 attempt(s)" in r.getMessage()]
    assert len(final) == 1 and final[0].exc_info is not None
    text = logging.Formatter().formatException(final[0].exc_info)
    assert text.count("Traceback (most recent call last)") == 1, text
    assert "During handling of the above exception" not in text
    retries = [r for r in caplog.records if "retrying in" in r.getMessage()]
    assert len(retries) == 2 and all(r.exc_info is None for r in retries)


# -- running from code -----------------------------------------------------------------------

FROM_CODE = """
import logging, sys
import eventbus
{setup}
eventbus.run("tests.sample_apps.orders", url=sys.argv[1]{options})
"""


def run_from_code(tmp_path: Path, env: dict[str, str], url: str, setup: str = "", options: str = "") -> EventbusProcess:
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(FROM_CODE.format(setup=setup, options=options)))
    return EventbusProcess([str(script), url], env, command=[sys.executable])


def wait_started(server: RedisServer) -> None:
    with server.client() as client:
        for _ in range(400):
            if client.get("sample:started"):
                client.delete("sample:started")
                return
            time.sleep(0.05)
    raise AssertionError("the startup hook never ran")


def test_running_from_code_logs_like_the_cli_and_names_code_as_the_source(
    tmp_path: Path, redis_server: RedisServer, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    process = run_from_code(tmp_path, subprocess_env, redis_server.url)
    processes.append(process)
    process.wait_for(r"INFO +eventbus: connecting to Redis at .* \(from code\)")
    process.wait_for(r"INFO +eventbus: tests.sample_apps.orders: 3 handler\(s\) subscribed")
    assert "(from --url)" not in stop(process)


def test_running_from_code_leaves_the_applications_logging_alone(
    tmp_path: Path, redis_server: RedisServer, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    setup = "logging.basicConfig(level=logging.WARNING, format='APP %(levelname)s %(message)s')"
    process = run_from_code(tmp_path, subprocess_env, redis_server.url, setup=setup)
    processes.append(process)
    wait_started(redis_server)
    output = stop(process)
    assert "INFO" not in output  # the application asked for warnings only, in its own format
    silent = run_from_code(tmp_path, subprocess_env, redis_server.url, options=", log_level=None")
    processes.append(silent)
    wait_started(redis_server)
    assert "connecting" not in stop(silent)
