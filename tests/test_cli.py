"""The CLI as a user runs it: subprocesses, redis-cli, signals, exit codes."""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from eventbus._cli import main
from tests.cli_process import ROOT, EventbusProcess, hangups_reach_children, wait_until
from tests.redis_server import RedisServer, free_port, port_open


@pytest.fixture
def processes() -> Iterator[list[EventbusProcess]]:
    started: list[EventbusProcess] = []
    yield started
    for process in started:
        process.kill()


def redis_cli(port: int, *args: str, stdin: bytes | None = None) -> str:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *args], input=stdin, capture_output=True, check=True, timeout=10
    )
    return result.stdout.decode()


def eventbus(args: list[str], env: dict[str, str], stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args],
        cwd=ROOT,
        env=env,
        input=stdin.decode() if stdin else None,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("options", "environment"),
    [([], {}), (["--no-autopipeline"], {}), ([], {"EVENTBUS_AUTOPIPELINE": "0"})],
    ids=["auto-pipelining", "--no-autopipeline", "EVENTBUS_AUTOPIPELINE=0"],
)
def test_run_handles_redis_cli_publishes_and_exits_0_on_sigterm(
    options: list[str],
    environment: dict[str, str],
    redis_server: RedisServer,
    sync_redis: redis.Redis,
    subprocess_env: dict[str, str],
    processes: list[EventbusProcess],
) -> None:
    env = {**subprocess_env, **environment}
    proc = EventbusProcess(["run", "tests.sample_apps.orders", "--url", redis_server.url, *options], env)
    processes.append(proc)
    proc.wait_for("subscribed to 2 channel")
    # ctx.redis is the plain client only when asked for: the log says so.
    assert ("auto-pipelining is off" in proc.output) == bool(options or environment), proc.output
    assert redis_cli(redis_server.port, "PUBLISH", "purchase_orders", "42").strip() == "1"
    assert redis_cli(redis_server.port, "PUBLISH", "purchase_orders:Closing Ceremony", "7").strip() == "1"
    deadline = time.monotonic() + 10
    while sync_redis.llen("ceremony") < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output
    assert sync_redis.get("orders_seen") == b"1"
    assert sync_redis.lrange("ceremony", 0, -1) == [b"purchase_orders:Closing Ceremony|purchase_orders:* Ceremony|7"]
    assert sync_redis.get("sample:started") == b"1" and sync_redis.get("sample:stopped") == b"1"
    assert "all queued work finished" in proc.output


def test_an_invalid_eventbus_autopipeline_is_a_one_line_usage_error(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "EVENTBUS_AUTOPIPELINE": "maybe"}
    result = eventbus(["run", "tests.sample_apps.orders", "--url", redis_server.url], env)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "EVENTBUS_AUTOPIPELINE" in line]
    assert len(errors) == 1 and "must be 1 or 0" in errors[0] and "Traceback" not in result.stderr


def test_sigint_also_stops_cleanly(
    redis_server: RedisServer, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    proc = EventbusProcess(["run", "tests.sample_apps.orders", "--url", redis_server.url], subprocess_env)
    processes.append(proc)
    proc.wait_for("subscribed")
    proc.signal(signal.SIGINT)
    assert proc.wait() == 0, proc.output


def test_second_signal_exits_at_once(
    redis_server: RedisServer, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    proc = EventbusProcess(
        ["run", "tests.sample_apps.stuck", "--url", redis_server.url, "--grace", "60"], subprocess_env
    )
    processes.append(proc)
    proc.wait_for("subscribed")
    redis_cli(redis_server.port, "PUBLISH", "stuck", "1")
    proc.wait_for("stuck handler started")
    proc.signal(signal.SIGTERM)
    proc.wait_for("finishing queued work")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 130
    assert time.monotonic() - started < 5
    assert "exiting now, abandoning 1 message(s)" in proc.output


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz", "module 'no_such_module_xyz' not found"),
        ("tests.redis_server", "defines no handlers"),
        ("tests.sample_apps.orders:missing", "does not define 'missing'"),
        ("tests.sample_apps.duplicates", "duplicate handler name"),
        ("tests/sample_apps/orders.py", "is a file path, not a module name: did you mean tests.sample_apps.orders?"),
        ("tests/sample_apps/orders.py:router", "did you mean tests.sample_apps.orders:router?"),
        ("tests.sample_apps.orders:", "invalid target 'tests.sample_apps.orders:': nothing after ':'"),
    ],
)
def test_load_errors_are_one_line_and_exit_2(target: str, message: str, subprocess_env: dict[str, str]) -> None:
    result = eventbus(["run", target, "--url", "redis://127.0.0.1:1"], subprocess_env)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_explicit_url_fails_after_bounded_retries(subprocess_env: dict[str, str]) -> None:
    port = free_port()
    started = time.monotonic()
    result = eventbus(
        [
            "run",
            "tests.sample_apps.orders",
            "--url",
            f"redis://:hunter2@127.0.0.1:{port}/0",
            "--connect-timeout",
            "1.5",
        ],
        subprocess_env,
    )
    assert result.returncode == 1
    assert "did not answer within 2s" in result.stderr or "did not answer within" in result.stderr
    assert "not answering (attempt 1" in result.stderr  # the retries are logged
    assert "hunter2" not in result.stderr  # the password never reaches a log
    assert time.monotonic() - started < 20


def test_unsupported_url_scheme_is_a_usage_error(subprocess_env: dict[str, str]) -> None:
    result = eventbus(["publish", "x", "1", "--url", "http://localhost"], subprocess_env)
    assert result.returncode == 2
    assert "unsupported scheme 'http'" in result.stderr


def test_publish_from_argument_and_stdin(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    pubsub = sync_redis.pubsub()
    pubsub.subscribe("news")
    pubsub.get_message(timeout=1)
    env = {**subprocess_env, "EVENTBUS_URL": redis_server.url}
    first = eventbus(["publish", "news", "hello"], env)
    assert first.returncode == 0 and "1 reception(s)" in first.stdout
    assert eventbus(["publish", "news"], env, stdin=b'{"a": 1}').returncode == 0
    assert eventbus(["publish", "news", "--lines"], env, stdin=b"l1\nl2\n").returncode == 0
    got = []
    while (msg := pubsub.get_message(timeout=1)) is not None:
        got.append(msg["data"])
    pubsub.close()
    assert got == [b"hello", b'{"a": 1}', b"l1", b"l2"]


def test_routes_lists_subscriptions_by_handler(subprocess_env: dict[str, str]) -> None:
    result = eventbus(["routes", "tests.sample_apps.orders"], subprocess_env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KIND", "SUBSCRIPTION", "HANDLER", "OPTIONS"]
    assert any(line.startswith("pattern  purchase_orders:* Ceremony") and "ceremony" in line for line in lines)
    assert any("opening_sync" in line and line.rstrip().endswith("sync") for line in lines)
    assert all("payload=" in line for line in lines[1:] if not line.startswith(("startup:", "shutdown:")))
    assert "startup: opened" in lines and "shutdown: closed" in lines


def test_embedded_redis_when_nothing_answers(subprocess_env: dict[str, str], processes: list[EventbusProcess]) -> None:
    env = {**subprocess_env, "EVENTBUS_DEFAULT_URL": f"redis://127.0.0.1:{free_port()}/0"}
    proc = EventbusProcess(["run", "tests.sample_apps.orders"], env)
    processes.append(proc)
    match = proc.wait_for(r"started an embedded redis-server at (redis://127\.0\.0\.1:(\d+)/0)")
    url, port = match.group(1), int(match.group(2))
    proc.wait_for("subscribed")
    publish = eventbus(["publish", "purchase_orders", "7"], {**subprocess_env, "EVENTBUS_URL": url})
    assert publish.returncode == 0 and "1 reception(s)" in publish.stdout
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while client.get("orders_seen") != b"1" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert client.get("orders_seen") == b"1"
    client.close()
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output
    assert not port_open(port)  # stopped with the run


def test_publish_to_an_unreachable_redis_is_one_error_line(subprocess_env: dict[str, str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = eventbus(["publish", "news", "hi", "--url", url, "--connect-timeout", "0.5"], subprocess_env)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("eventbus: error: Redis at redis://:***@127.0.0.1")
    assert "hunter2" not in result.stderr


def test_sigterm_while_still_connecting_stops_at_once(
    subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    """A signal during the bounded connect retries ends the run promptly and cleanly."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    proc = EventbusProcess(["run", "tests.sample_apps.orders", "--url", url, "--connect-timeout", "60"], subprocess_env)
    processes.append(proc)
    proc.wait_for("is not answering")
    started = time.monotonic()
    proc.signal(signal.SIGTERM)
    assert proc.wait(10) == 0, proc.output
    assert time.monotonic() - started < 5
    assert "cancelling the start" in proc.output
    assert "Traceback" not in proc.output


def test_cli_workers_below_one_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", "tests.sample_apps.orders", "--workers", "0", "--url", "redis://127.0.0.1:1/0"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "--workers" in err


@pytest.mark.parametrize(
    ("args", "wrong", "suggestion"),
    [
        (["run", "tests.sample_apps.orders", "--work", "2"], "--work", "--workers"),  # argparse took it before
        (["run", "tests.sample_apps.orders", "--wrokers", "2"], "--wrokers", "--workers"),
        (["run", "tests.sample_apps.orders", "--wrokers=2"], "--wrokers", "--workers"),
        (["run", "tests.sample_apps.orders", "--metric-port", "9"], "--metric-port", "--metrics-port"),
        (["publish", "news", "hi", "--shard"], "--shard", "--sharded"),
        (["dead-letters", "list", "--cout", "3"], "--cout", "--count"),
    ],
)
def test_a_misspelled_or_abbreviated_option_is_one_line_naming_the_closest(
    args: list[str], wrong: str, suggestion: str, subprocess_env: dict[str, str]
) -> None:
    result = eventbus(args, subprocess_env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"eventbus {args[0]}: error: unrecognized option {wrong}: did you mean {suggestion}?"
    ], result.stderr


def test_no_parser_accepts_abbreviations() -> None:
    from eventbus._cli import build_parser

    parser = build_parser()
    subcommands = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    parsers = [parser, *subcommands[0].choices.values()]
    assert len(parsers) > 5
    assert all(not p.allow_abbrev for p in parsers)


def test_an_unknown_option_without_a_close_one_points_to_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routes", "tests.sample_apps.orders", "--zzzzzz"]) == 2
    assert (
        capsys.readouterr().err == "eventbus routes: error: unrecognized option --zzzzzz (see eventbus routes --help)\n"
    )
    assert main(["routes", "tests.sample_apps.orders", "extra"]) == 2
    assert "unrecognized arguments: extra" in capsys.readouterr().err


def test_version_is_one_line_on_a_narrow_terminal(subprocess_env: dict[str, str]) -> None:
    result = eventbus(["--version"], {**subprocess_env, "COLUMNS": "30"})
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith("eventbus ") and "hot path" in lines[0], result.stdout


WIDE = """
from eventbus import on, on_pattern


@on("注文")
async def 受付(msg, ctx): ...


@on("orders")
async def plain(msg, ctx): ...


@on_pattern("🎉*")
async def party(msg, ctx): ...
"""


def test_routes_stay_aligned_with_wide_characters(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    from eventbus._tables import display_width

    (tmp_path / "wide_app.py").write_text(WIDE, encoding="utf-8")
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{subprocess_env['PYTHONPATH']}"}
    result = eventbus(["routes", "wide_app"], env)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.startswith("KIND") and len(rows) == 3, result.stdout
    # Each column starts at the same terminal column on every row, counting wide characters as 2.
    handler_at = display_width(header[: header.index("HANDLER")])
    options_at = display_width(header[: header.index("OPTIONS")])
    for row, handler in zip(rows, ["plain", "受付", "party"], strict=True):
        assert display_width(row[: row.index(handler)]) == handler_at, result.stdout
        assert display_width(row[: row.index("payload=")]) == options_at, result.stdout


@hangups_reach_children
def test_sighup_drains_and_runs_the_shutdown_hooks(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    """A closed terminal or a dropped ssh session stops the runner like SIGTERM: drain, hooks, exit 0."""
    proc = EventbusProcess(["run", "tests.sample_apps.slow", "--url", redis_server.url], subprocess_env)
    processes.append(proc)
    proc.wait_for("subscribed")
    for i in range(3):
        sync_redis.publish("slow", str(i))
    proc.wait_for("slow handler started on 0")
    assert wait_until(lambda: sync_redis.llen("slow:received") == 3)  # all three read, two still queued
    proc.signal(signal.SIGHUP)
    assert proc.wait() == 0, proc.output
    assert sync_redis.lrange("slow:done", 0, -1) == [b"0", b"1", b"2"]  # queued work finished
    assert sync_redis.lrange("slow:stopped", 0, -1) == [str(proc.process.pid).encode()]
    assert "SIGHUP received: stopping" in proc.output
    assert "all queued work finished" in proc.output


@pytest.mark.skipif(shutil.which("nohup") is None, reason="needs nohup")
def test_under_nohup_sighup_stays_ignored(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    """`nohup eventbus run ...` asked to outlive the terminal: a hang-up must not stop it."""
    nohup = ["nohup", sys.executable, "-m", "eventbus"]
    proc = EventbusProcess(["run", "tests.sample_apps.orders", "--url", redis_server.url], subprocess_env, nohup)
    processes.append(proc)
    proc.wait_for("subscribed")
    proc.signal(signal.SIGHUP)
    assert sync_redis.publish("purchase_orders", "1") == 1
    assert wait_until(lambda: sync_redis.get("orders_seen") == b"1")
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output
    assert "SIGTERM received: stopping" in proc.output and "SIGHUP" not in proc.output


def _read_until(fd: int, text: bytes, timeout: float = 20.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no {text!r} within {timeout}s:\n{seen.decode(errors='replace')}"
        seen += os.read(fd, 65536)
    return seen


@hangups_reach_children
@pytest.mark.skipif(sys.platform != "linux", reason="makes a pty the controlling terminal (Linux ioctl)")
def test_closing_the_terminal_drains_and_runs_the_hooks(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    """The real thing behind SIGHUP: the runner's terminal goes away (a closed window, a dropped ssh)."""
    import fcntl
    import termios

    def own_terminal() -> None:  # a new session whose controlling terminal is the pty
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "eventbus", "run", "tests.sample_apps.slow", "--url", redis_server.url],
        stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=subprocess_env, preexec_fn=own_terminal,
    )  # fmt: skip
    os.close(slave)
    try:
        _read_until(master, b"subscribed")
        for i in range(3):
            sync_redis.publish("slow", str(i))
        _read_until(master, b"slow handler started on 0")
        assert wait_until(lambda: sync_redis.llen("slow:received") == 3)  # all three read, two still queued
        os.close(master)  # the terminal hangs up: the kernel sends SIGHUP; writes to it fail from now on
        master = -1
        assert proc.wait(30) == 0
        assert sync_redis.lrange("slow:done", 0, -1) == [b"0", b"1", b"2"]
        assert sync_redis.lrange("slow:stopped", 0, -1) == [str(proc.pid).encode()]
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


DEEP = {
    "deep/__init__.py": "",
    "deep/handlers.py": "from eventbus import on\n\nfrom deep import models\n",
    "deep/models.py": '"""Models."""\n\nfrom deep.storage import save\n',
    "deep/storage.py": "import os\n\nimport nosuchpkg_xyz\n\n\ndef save(): ...\n",
}


def test_a_missing_import_three_modules_deep_names_its_file_and_line(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    for name, text in DEEP.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "eventbus", "run", "deep.handlers"],
        cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "eventbus: error: module 'deep.handlers' failed to import: "
        f"{os.path.join('deep', 'storage.py')}:3: ModuleNotFoundError: No module named 'nosuchpkg_xyz'"
    ]


# -- the URL: every mistake is one line and exit 2; a file keeps the password out of argv ---------

URL_COMMANDS = {
    "run": ["run", "tests.sample_apps.orders"],
    "publish": ["publish", "orders", "x"],
    "check": ["check"],
    "streams": ["streams", "tests.sample_apps.ledger"],
    "dead-letters": ["dead-letters", "list"],
}
URL_MISTAKES = [
    ("redis://u:pw-s3cret@[::1/0", "unbalanced brackets in the host '[::1'"),
    ("redis://u:pw-s3cret@127.0.0.1:1/0?option=1", "unknown option 'option' in the query string"),
]


@pytest.mark.parametrize("command", URL_COMMANDS.values(), ids=URL_COMMANDS.keys())
def test_every_url_mistake_is_one_line_and_exit_2_from_every_command(
    command: list[str],
    subprocess_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url_file = tmp_path / "redis-url"
    for url, named in URL_MISTAKES:
        # As a user runs it: a process of its own, nothing but the one line on standard error.
        result = eventbus([*command, "--url", url], subprocess_env)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and "(from --url)" in result.stderr, result.stderr
        assert named in result.stderr and "s3cret" not in result.stderr, result.stderr
        # The other ways to give it, in process (quicker; an exception would fail the test).
        url_file.write_text(url + "\n")
        for where, option, env in (
            ("$EVENTBUS_URL", [], {"EVENTBUS_URL": url}),
            (f"--url-file {url_file}", ["--url-file", str(url_file)], {}),
            (f"$EVENTBUS_URL_FILE {url_file}", [], {"EVENTBUS_URL_FILE": str(url_file)}),
        ):
            with monkeypatch.context() as patched:
                patched.delenv("EVENTBUS_URL", raising=False)
                for name, value in env.items():
                    patched.setenv(name, value)
                assert main([*command, *option]) == 2
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and f"(from {where})" in err and named in err, err
            assert "s3cret" not in err if "file" not in where else "pw-" not in err, err  # a file's content: never


@pytest.fixture
def acl_url_file(own_redis_server: RedisServer, tmp_path: Path) -> tuple[RedisServer, Path]:
    """A user with a password, and its URL in a file as a container secret is mounted (newline included)."""
    with own_redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "svc", "on", ">pw-s3cret", "~*", "&*", "+@all")
    secret = tmp_path / "redis-url"
    secret.write_text(f"redis://svc:pw-s3cret@127.0.0.1:{own_redis_server.port}/0\n")
    return own_redis_server, secret


def test_the_url_from_a_file_keeps_the_password_out_of_argv_and_the_log(
    acl_url_file: tuple[RedisServer, Path], subprocess_env: dict[str, str], processes: list[EventbusProcess]
) -> None:
    server, secret = acl_url_file
    proc = EventbusProcess(["run", "tests.sample_apps.orders", "--url-file", str(secret)], subprocess_env)
    processes.append(proc)
    proc.wait_for("subscribed to 2 channel")
    assert "s3cret" not in " ".join(proc.process.args)  # type: ignore[arg-type]  # what ps shows
    with server.client() as admin:
        assert [c["user"] for c in admin.client_list() if c["name"].startswith("eventbus-sub")] == ["svc"]
    proc.signal(signal.SIGTERM)
    assert proc.wait() == 0, proc.output
    assert f"connecting to Redis at redis://svc:***@127.0.0.1:{server.port}/0 (from --url-file {secret})" in proc.output
    assert "s3cret" not in proc.output

    env = {**subprocess_env, "EVENTBUS_URL_FILE": str(secret)}
    published = eventbus(["publish", "orders", "x"], env)
    assert published.returncode == 0 and "published 1 message(s)" in published.stdout, published.stderr
    checked = eventbus(["check", "--url-file", str(secret)], subprocess_env)
    assert checked.returncode == 0 and "svc:***@" in checked.stdout, checked.stderr
    assert "s3cret" not in published.stdout + published.stderr + checked.stdout + checked.stderr


def test_an_unusable_url_file_is_one_line_naming_the_file(
    acl_url_file: tuple[RedisServer, Path], subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    _, secret = acl_url_file
    missing = tmp_path / "nowhere"
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for path, error in ((missing, "No such file or directory"), (empty, "is empty")):
        for option, env in (
            (["--url-file", str(path)], subprocess_env),
            ([], {**subprocess_env, "EVENTBUS_URL_FILE": str(path)}),
        ):
            result = eventbus(["publish", "orders", "x", *option], env)
            assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
            assert str(path) in result.stderr and error in result.stderr, result.stderr
    both = eventbus(["check"], {**subprocess_env, "EVENTBUS_URL": "redis://h/0", "EVENTBUS_URL_FILE": str(secret)})
    assert both.returncode == 2 and "both $EVENTBUS_URL and $EVENTBUS_URL_FILE are set" in both.stderr
    given_twice = eventbus(["check", "--url", "redis://h/0", "--url-file", str(secret)], subprocess_env)
    assert given_twice.returncode == 2 and "not allowed with argument --url" in given_twice.stderr
    assert "s3cret" not in both.stderr + given_twice.stderr


def test_publish_with_history_keeps_it(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    env = {**subprocess_env, "EVENTBUS_URL": redis_server.url}
    for data in ("a", "b", "c"):
        assert eventbus(["publish", "--history", "2", "--ttl", "60", "orders", data], env).returncode == 0
    # At least the last 2 are kept (Redis trims whole blocks of entries: docs/recovery.md).
    assert [fields[b"d"] for _, fields in sync_redis.xrange("eventbus:history:{orders}")][-2:] == [b"b", b"c"]
    [(top, _)] = sync_redis.xrevrange("eventbus:history:{orders}", count=1)
    assert top.endswith(b"-3") and sync_redis.get("eventbus:history-top:{orders}") == b"3"
    assert 0 < sync_redis.ttl("eventbus:history:{orders}") <= 60
    bad = eventbus(["publish", "--ttl", "60", "orders", "x"], env)
    assert bad.returncode != 0 and "ttl without history" in bad.stderr
