"""The commands a user types: the one-command demo and the two-terminal form, as subprocesses."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from olympics_expect import expected_alerts, expected_state

from apps.olympics import generate_orders
from tests.conftest import ROOT
from tests.redis_server import RedisServer, free_port


class Process:
    """A child process whose output is collected by threads, so waiting for a line cannot hang."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.popen = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.out: list[str] = []
        self.err: list[str] = []
        assert self.popen.stdout is not None and self.popen.stderr is not None
        self._threads = [
            threading.Thread(target=self._collect, args=(stream, lines), daemon=True)
            for stream, lines in ((self.popen.stdout, self.out), (self.popen.stderr, self.err))
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _collect(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line)

    @property
    def stdout(self) -> str:
        return "".join(self.out)

    @property
    def stderr(self) -> str:
        return "".join(self.err)

    def wait_for(self, text: str, *, stream: str = "out", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in (self.stdout if stream == "out" else self.stderr):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                self.popen.kill()
                raise AssertionError(f"{text!r} never appeared\nstdout:\n{self.stdout}\nstderr:\n{self.stderr}")
            time.sleep(0.05)

    def terminate(self, timeout: float = 20.0) -> int:
        self.popen.send_signal(signal.SIGTERM)
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            raise
        for thread in self._threads:
            thread.join(5)
        return code

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait()


@pytest.fixture
def spawn(subprocess_env: dict[str, str]) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.kill()


def olympics_cli(python: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "apps.olympics", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("embedded", ["redis-server", "fakeredis"])
def test_one_command_demo_on_a_fresh_machine(
    python: str, subprocess_env: dict[str, str], spawn: list[Process], embedded: str, tmp_path: Path
) -> None:
    """No Redis configured and none at the default address: eventbus starts an embedded one
    (redis-server if installed, else fakeredis), and the demo runs on it."""
    env = dict(subprocess_env)
    env["EVENTBUS_DEFAULT_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    if embedded == "fakeredis":
        env["PATH"] = str(tmp_path)  # an empty directory: no redis-server binary to be found
    env |= {"OLYMPICS_SIMULATE": "60", "OLYMPICS_RATE": "300", "OLYMPICS_SEED": "11"}
    app = Process([python, "-m", "eventbus", "run", "apps.olympics"], env)
    spawn.append(app)
    app.wait_for("Still listening")
    assert app.terminate() == 0, app.stderr

    assert f"started an embedded {embedded}" in app.stderr
    out = app.stdout.splitlines()
    assert out[0].startswith("Simulating 60 ticket purchases, 300 a second (seed 11")
    opening, ceremonies = expected_alerts(generate_orders(60, 11))
    assert sum(line.startswith("===> Purchase Opening Ceremony: #") for line in out) == opening
    assert sum(line.startswith("Purchase ") and "Ceremony: #" in line for line in out) == ceremonies
    assert "Sales summary" in out
    assert "Check: the histogram counts" in app.stdout
    assert "stopped: all queued work finished" in app.stderr


def test_two_terminals(
    python: str, subprocess_env: dict[str, str], spawn: list[Process], redis_server: RedisServer, tmp_path: Path
) -> None:
    url = redis_server.url
    listeners = Process(
        [python, "-m", "eventbus", "run", "apps.olympics", "--url", url], subprocess_env | {"OLYMPICS_SIMULATE": "0"}
    )
    spawn.append(listeners)

    # The simulator waits (up to --wait) for the listeners to subscribe before posting.
    sim = olympics_cli(python, subprocess_env, "simulate", "--url", url, "-n", "500", "--rate", "0", "--seed", "1")
    assert sim.returncode == 0, sim.stderr
    assert "posted 500 purchases" in sim.stdout and "(seed 1;" in sim.stdout
    assert "purchases [" in sim.stderr and "500/500 100%" in sim.stderr  # the progress bar's last state

    orders = generate_orders(500, 1)
    want = expected_state(orders)
    with redis_server.client() as client:
        deadline = time.monotonic() + 20
        while {k.decode(): float(v) for k, v in client.hgetall("sales_summary").items()} != want.summary:
            assert time.monotonic() < deadline, "the listeners did not process every purchase"
            time.sleep(0.05)

    report = olympics_cli(python, subprocess_env, "report", "--url", url, "--png", str(tmp_path / "sales.png"))
    assert report.returncode == 0, report.stderr
    tickets = sum(o.qty for o in orders)
    assert any(line.split()[:3] == ["Total", "500", f"{tickets:,}"] for line in report.stdout.splitlines())
    assert f"Check: the histogram counts {tickets:,} tickets" in report.stdout
    if "matplotlib" in report.stderr:  # not installed: said clearly, and no file
        assert not (tmp_path / "sales.png").exists()
    else:
        assert (tmp_path / "sales.png").read_bytes().startswith(b"\x89PNG")

    assert listeners.terminate() == 0, listeners.stderr
    opening, ceremonies = expected_alerts(orders)
    alerts = listeners.stdout.splitlines()
    assert sum(line.startswith("===> Purchase Opening Ceremony: #") for line in alerts) == opening
    assert sum(line.startswith("Purchase ") and "Ceremony: #" in line for line in alerts) == ceremonies
    assert "Simulating" not in listeners.stdout  # OLYMPICS_SIMULATE=0: listeners only

    reset = olympics_cli(python, subprocess_env, "reset", "--url", url)
    assert reset.returncode == 0, reset.stderr
    with redis_server.client() as client:
        assert client.keys("*") == []


def test_simulate_refuses_when_nobody_listens(
    python: str, subprocess_env: dict[str, str], redis_server: RedisServer
) -> None:
    result = olympics_cli(python, subprocess_env, "simulate", "--url", redis_server.url, "-n", "5", "--wait", "0")
    assert result.returncode == 2
    assert "no listener subscribed" in result.stderr and "OLYMPICS_SIMULATE=0 python -m eventbus run" in result.stderr
    with redis_server.client() as client:
        assert client.dbsize() == 0  # nothing posted


def test_report_on_unreachable_redis(python: str, subprocess_env: dict[str, str]) -> None:
    result = olympics_cli(python, subprocess_env, "report", "--url", f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:" in result.stderr
    assert "secret" not in result.stderr
