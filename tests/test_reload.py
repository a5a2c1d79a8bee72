"""`run --reload`: an edited handler module takes effect after a clean restart of the runner."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest
import redis

from eventbus._cli import main
from eventbus._reload import child_arguments, watched_paths
from tests.cli_process import ROOT, EventbusProcess, hangups_reach_children
from tests.redis_server import RedisServer

HANDLERS = """
from eventbus import on

VERSION = {version!r}


@on("hot")
async def hot(msg, ctx):
    await ctx.redis.set("hot:version", VERSION)
"""


def write_package(root: Path, version: str) -> Path:
    package = root / "hotpkg"
    package.mkdir(exist_ok=True)
    (package / "__init__.py").write_text("")
    handlers = package / "handlers.py"
    handlers.write_text(HANDLERS.format(version=version))
    return handlers


def published_version(client: redis.Redis, want: str, timeout: float = 30.0) -> bool:
    """Publish until the handler writes ``want`` (a restart drops what it publishes meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.publish("hot", "x")
        if client.get("hot:version") == want.encode():
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_an_edit_restarts_the_runner_with_the_new_code(
    tmp_path: Path, redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    pytest.importorskip("watchfiles", reason="run --reload needs the eventbus[reload] extra")
    handlers = write_package(tmp_path, "v1")
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}:{subprocess_env['PYTHONPATH']}"}
    proc = EventbusProcess(["run", "hotpkg.handlers", "--reload", "--url", redis_server.url, "--grace", "2"], env)
    try:
        proc.wait_for("development only, not for production")
        proc.wait_for("subscribed to 1 channel")
        client = redis_server.client()
        assert published_version(client, "v1"), proc.output
        handlers.write_text(HANDLERS.format(version="v2"))
        proc.wait_for(r"handlers\.py changed; restarting the runner")
        assert published_version(client, "v2"), proc.output
        # The old runner stopped the clean way (drain, summary) before the new one started.
        assert proc.output.count("stopped: all queued work finished") == 1
        # A mistake mid-edit: the runner cannot start; the next save brings it back.
        handlers.write_text("def broken(:\n")
        proc.wait_for("the runner exited with code 2; waiting for a change to restart it")
        handlers.write_text(HANDLERS.format(version="v3"))
        assert published_version(client, "v3"), proc.output
        proc.signal(signal.SIGINT)
        assert proc.wait() == 0, proc.output
        assert proc.output.count("stopped: all queued work finished") == 3
        assert "received again" not in proc.output  # one Ctrl-C reaches the child once
    finally:
        if proc.process.poll() is None:
            proc.process.kill()


def test_watched_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_package(tmp_path, "v1")
    (tmp_path / "single.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    paths, accept = watched_paths("hotpkg.handlers:router")
    assert paths == [tmp_path / "hotpkg"] and accept(tmp_path / "hotpkg" / "other.py")
    paths, accept = watched_paths("single")
    assert paths == [tmp_path] and accept(tmp_path / "single.py") and not accept(tmp_path / "other.py")
    assert child_arguments(["run", "m", "--reload", "--grace", "1"]) == ["run", "m", "--grace", "1"]


def test_reload_without_watchfiles_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles", None)  # import fails as if not installed
    assert main(["run", "tests.sample_apps.orders", "--reload"]) == 2
    assert capsys.readouterr().err == ("eventbus: error: --reload needs watchfiles: pip install 'eventbus[reload]'\n")


@hangups_reach_children
def test_sighup_to_the_reload_parent_drains_the_runner(
    tmp_path: Path, redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """A closed terminal stops `run --reload` as SIGTERM would: the runner drains and runs its hooks."""
    pytest.importorskip("watchfiles", reason="run --reload needs the eventbus[reload] extra")
    package = tmp_path / "huppkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "handlers.py").write_text((ROOT / "tests" / "sample_apps" / "slow.py").read_text())
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}:{subprocess_env['PYTHONPATH']}"}
    proc = EventbusProcess(["run", "huppkg.handlers", "--reload", "--url", redis_server.url], env)
    try:
        proc.wait_for("subscribed to 1 channel")
        with redis_server.client() as client:
            client.publish("slow", "1")
            proc.wait_for("slow handler started on 1")
            proc.signal(signal.SIGHUP)
            assert proc.wait() == 0, proc.output
            assert client.lrange("slow:done", 0, -1) == [b"1"]
            assert client.llen("slow:stopped") == 1
        assert "SIGHUP received: stopping" in proc.output  # forwarded to the runner as it came
        assert "all queued work finished" in proc.output
    finally:
        proc.kill()
