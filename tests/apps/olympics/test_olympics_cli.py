"""The commands a user types: the one-command demo and the two-terminal form, as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


# eventbus's operational state: the heartbeats every runner writes for the dashboard, and the
# purchase channels' histories and the listeners' positions in them (they expire with the
# histories' ttl). The demo's promise is about its data, not these.
EVENTBUS_STATE = (b"eventbus:{heartbeat}:", b"eventbus:history:", b"eventbus:history-top:", b"eventbus:history-pos:")


def keys(client: Any) -> list[bytes]:
    """The keys in Redis but eventbus's operational state."""
    return [k for k in client.keys("*") if not k.startswith(EVENTBUS_STATE)]


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
    python: str, subprocess_env: dict[str, str], spawn: list[Process], redis_server: RedisServer
) -> None:
    url = redis_server.url
    with redis_server.client() as client:  # the user's own keys, under names the app also uses
        client.set("invoices:Someone", "theirs")
        client.sadd("sales:Their Event", "x")
    # A URL given on purpose: the app only listens, and says how to simulate.
    listeners = Process([python, "-m", "eventbus", "run", "apps.olympics", "--url", url], subprocess_env)
    spawn.append(listeners)
    listeners.wait_for("Listening only: the Redis URL was given explicitly")
    assert f"({url}, from --url)" in listeners.stdout
    assert "set OLYMPICS_SIMULATE=300" in listeners.stdout
    assert f"python -m apps.olympics simulate --url {url}" in listeners.stdout

    # The simulator waits (up to --wait) for the listeners to subscribe before posting.
    sim = olympics_cli(python, subprocess_env, "simulate", "--url", url, "-n", "500", "--rate", "0", "--seed", "1")
    assert sim.returncode == 0, sim.stderr
    assert "posted 500 purchases" in sim.stdout and "(seed 1;" in sim.stdout
    assert "purchases [" in sim.stderr and "500/500 100%" in sim.stderr  # the progress bar's last state

    orders = generate_orders(500, 1)
    want = expected_state(orders)
    with redis_server.client() as client:  # the tutorial's key names: producers written its way work
        deadline = time.monotonic() + 20
        while {k.decode(): float(v) for k, v in client.hgetall("sales_summary").items()} != want.summary:
            assert time.monotonic() < deadline, "the listeners did not process every purchase"
            time.sleep(0.05)

    report = olympics_cli(python, subprocess_env, "report", "--url", url)
    assert report.returncode == 0, report.stderr
    tickets = sum(o.qty for o in orders)
    assert any(line.split()[:3] == ["Total", "500", f"{tickets:,}"] for line in report.stdout.splitlines())
    assert f"Check: the histogram counts {tickets:,} tickets" in report.stdout

    assert listeners.terminate() == 0, listeners.stderr
    opening, ceremonies = expected_alerts(orders)
    alerts = listeners.stdout.splitlines()
    assert sum(line.startswith("===> Purchase Opening Ceremony: #") for line in alerts) == opening
    assert sum(line.startswith("Purchase ") and "Ceremony: #" in line for line in alerts) == ceremonies
    assert "Simulating" not in listeners.stdout  # an explicit URL: listeners only

    # Not a server the app started, and no terminal to ask on: refused, nothing deleted.
    refused = olympics_cli(python, subprocess_env, "reset", "--url", url)
    assert refused.returncode == 2
    assert "refusing to delete" in refused.stderr and "pass --yes" in refused.stderr
    reset = olympics_cli(python, subprocess_env, "reset", "--url", url, "--yes")
    assert reset.returncode == 0, reset.stderr
    with redis_server.client() as client:  # only what the app created is gone
        assert sorted(keys(client)) == [b"invoices:Someone", b"sales:Their Event"]
    again = olympics_cli(python, subprocess_env, "reset", "--url", url)
    assert again.returncode == 0 and "nothing to delete" in again.stdout


def test_report_png(python: str, subprocess_env: dict[str, str], redis_server: RedisServer, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="report --png needs matplotlib, an optional package (not installed)")
    report = olympics_cli(python, subprocess_env, "report", "--url", redis_server.url, "--png", str(tmp_path / "s.png"))
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")


def test_report_png_without_matplotlib_says_so(
    python: str, subprocess_env: dict[str, str], redis_server: RedisServer, tmp_path: Path
) -> None:
    # A sitecustomize-free way to hide an installed matplotlib from the child: a stub that fails.
    (tmp_path / "matplotlib.py").write_text("raise ImportError('hidden by the test')\n")
    env = subprocess_env | {"PYTHONPATH": f"{tmp_path}{os.pathsep}{subprocess_env['PYTHONPATH']}"}
    report = olympics_cli(python, env, "report", "--url", redis_server.url, "--png", str(tmp_path / "s.png"))
    assert report.returncode == 1
    assert "needs matplotlib" in report.stderr and "pip install matplotlib" in report.stderr
    assert not (tmp_path / "s.png").exists()


def test_listen_only_with_eventbus_url(
    python: str, subprocess_env: dict[str, str], spawn: list[Process], redis_server: RedisServer
) -> None:
    env = subprocess_env | {"EVENTBUS_URL": redis_server.url}
    app = Process([python, "-m", "eventbus", "run", "apps.olympics"], env)
    spawn.append(app)
    app.wait_for("Listening only: the Redis URL was given explicitly")
    assert "from $EVENTBUS_URL" in app.stdout
    app.wait_for("subscribed to", stream="err")
    assert app.terminate() == 0, app.stderr
    assert "Simulating" not in app.stdout
    with redis_server.client() as client:
        assert keys(client) == []  # nothing invented, nothing written


def test_explicit_opt_in_simulates_isolated(
    python: str, subprocess_env: dict[str, str], spawn: list[Process], redis_server: RedisServer
) -> None:
    env = subprocess_env | {"OLYMPICS_SIMULATE": "40", "OLYMPICS_RATE": "0", "OLYMPICS_SEED": "5"}
    app = Process([python, "-m", "eventbus", "run", "apps.olympics", "--url", redis_server.url], env)
    spawn.append(app)
    app.wait_for("Still listening")
    assert app.terminate() == 0, app.stderr
    assert "under the key prefix 'olympics-demo:'" in app.stdout
    with redis_server.client() as client:
        assert {k for k in keys(client) if not k.startswith(b"olympics-demo:")} == set()  # dead letters too


def demo_run(python: str, env: dict[str, str]) -> Process:
    app = Process([python, "-m", "eventbus", "run", "apps.olympics"], env)
    app.wait_for("Still listening")
    assert app.terminate() == 0, app.stderr
    return app


def report_total(text: str) -> list[str]:
    return next(line.split()[:3] for line in text.splitlines() if line.split()[:1] == ["Total"])


def test_demo_on_a_server_it_did_not_start_is_isolated_and_per_run(
    python: str, subprocess_env: dict[str, str], redis_server: RedisServer
) -> None:
    """Nothing configured, and a Redis answers at the default address: the demo runs there, its
    data under a prefix of its own; a same-named key of another type does not disturb it; each
    run reports itself; reset deletes the demo's keys only, after asking."""
    with redis_server.client() as client:
        client.set("sales_summary", "the user's, a string")
        client.hset("invoices:Jim", "theirs", "1")
        before = {k: client.type(k) for k in keys(client)}
    env = subprocess_env | {"EVENTBUS_DEFAULT_URL": redis_server.url, "OLYMPICS_RATE": "0"}
    env |= {"OLYMPICS_SIMULATE": "", "OLYMPICS_SEED": ""}
    first = demo_run(python, env | {"OLYMPICS_SEED": "3"})
    assert "started an embedded" not in first.stderr
    line = first.stdout.splitlines()[0]
    assert line.startswith("Simulating 300 ticket purchases, as fast as possible (seed 3;"), line
    assert f"into {redis_server.url} under the key prefix 'olympics-demo:'" in line
    assert f"reset --url {redis_server.url} --prefix olympics-demo:" in first.stdout
    assert f"simulate --url {redis_server.url} --prefix olympics-demo:" in first.stdout
    orders = generate_orders(300, 3)
    assert report_total(first.stdout) == ["Total", "300", f"{sum(o.qty for o in orders):,}"]
    assert "WRONGTYPE" not in first.stderr  # the user's string is not the demo's key

    second = demo_run(python, env | {"OLYMPICS_SEED": "4"})
    orders = generate_orders(300, 4)
    assert report_total(second.stdout) == ["Total", "300", f"{sum(o.qty for o in orders):,}"]  # not 600
    assert "Check: the histogram counts" in second.stdout

    with redis_server.client() as client:
        others = {k: client.type(k) for k in keys(client) if not k.startswith(b"olympics-demo:")}
        assert others == before  # the user's keys, untouched; and no dead letter: nothing failed
        assert client.get("sales_summary") == b"the user's, a string"

    report = olympics_cli(python, subprocess_env, "report", "--url", redis_server.url, "--prefix", "olympics-demo:")
    assert report_total(report.stdout) == report_total(second.stdout)

    refused = olympics_cli(python, subprocess_env, "reset", "--url", redis_server.url, "--prefix", "olympics-demo:")
    assert refused.returncode == 2 and "pass --yes" in refused.stderr
    reset = olympics_cli(
        python, subprocess_env, "reset", "--url", redis_server.url, "--prefix", "olympics-demo:", "--yes"
    )
    assert reset.returncode == 0, reset.stderr
    with redis_server.client() as client:
        assert set(keys(client)) == set(before)


def test_demo_does_not_feed_other_listeners(
    python: str, subprocess_env: dict[str, str], redis_server: RedisServer, spawn: list[Process]
) -> None:
    with redis_server.client() as client:
        other = client.pubsub()
        other.subscribe("purchase_orders")  # someone's listener, on the server the demo would use
        env = subprocess_env | {"EVENTBUS_DEFAULT_URL": redis_server.url, "OLYMPICS_SIMULATE": ""}
        app = Process([python, "-m", "eventbus", "run", "apps.olympics"], env)
        spawn.append(app)
        app.wait_for("other subscriber(s) already listen on 'purchase_orders'")
        assert app.terminate() == 0, app.stderr
        other.close()
        assert "Simulating" not in app.stdout
        assert keys(client) == []


def test_a_second_demo_on_the_same_redis_keeps_to_the_prefix(
    python: str, subprocess_env: dict[str, str], redis_server: RedisServer, spawn: list[Process]
) -> None:
    """Issue 19: the demo run again beside a running one listens under the demo's prefix, so it
    rejects none of the first one's orders; its dead letters stay under the prefix, and reset
    removes everything both wrote."""
    env = subprocess_env | {"EVENTBUS_DEFAULT_URL": redis_server.url, "OLYMPICS_RATE": "0", "OLYMPICS_SIMULATE": ""}
    first = Process([python, "-m", "eventbus", "run", "apps.olympics"], env | {"OLYMPICS_SEED": "3"})
    spawn.append(first)
    first.wait_for("Still listening")
    second = Process([python, "-m", "eventbus", "run", "apps.olympics"], env)
    spawn.append(second)
    second.wait_for("Listening only: 1 other subscriber(s) already listen on 'purchase_orders'")
    assert "under the key prefix 'olympics-demo:'" in second.stdout
    second.wait_for("subscribed to", stream="err")

    sim = olympics_cli(
        python, subprocess_env, "simulate", "--url", redis_server.url, "--prefix", "olympics-demo:", "-n", "100",
        "--rate", "0",
    )  # fmt: skip
    assert sim.returncode == 0, sim.stderr
    with redis_server.client() as client:
        client.publish("purchase_orders", "no-such-order")  # refused by the three listeners of each demo
        deadline = time.monotonic() + 20
        while client.xlen("olympics-demo:dead-letter") < 6:
            assert time.monotonic() < deadline, second.stderr
            time.sleep(0.05)
    assert first.terminate() == 0, first.stderr
    assert second.terminate() == 0, second.stderr
    for demo in (first, second):  # the other's 100 orders were found, under the prefix: no rejection
        assert demo.stderr.count("rejected a message") == 3, demo.stderr
        assert "order 'no-such-order': no hash at" in demo.stderr
    with redis_server.client() as client:
        assert [k for k in keys(client) if not k.startswith(b"olympics-demo:")] == []
        letters = client.xrange("olympics-demo:dead-letter")
        assert len(letters) == 6 and len({fields[b"pid"] for _, fields in letters}) == 2  # from both demos
    reset = olympics_cli(
        python, subprocess_env, "reset", "--url", redis_server.url, "--prefix", "olympics-demo:", "--yes"
    )
    assert reset.returncode == 0, reset.stderr
    with redis_server.client() as client:
        assert keys(client) == []  # everything the demos wrote, dead letters included


def test_simulate_refuses_when_nobody_listens(
    python: str, subprocess_env: dict[str, str], redis_server: RedisServer
) -> None:
    result = olympics_cli(python, subprocess_env, "simulate", "--url", redis_server.url, "-n", "5", "--wait", "0")
    assert result.returncode == 2
    assert "no listener subscribed" in result.stderr and "python -m eventbus run apps.olympics --url" in result.stderr
    with redis_server.client() as client:
        assert keys(client) == []  # nothing posted


def test_report_on_unreachable_redis(python: str, subprocess_env: dict[str, str]) -> None:
    result = olympics_cli(python, subprocess_env, "report", "--url", f"redis://:secret@127.0.0.1:{free_port()}/0")
    assert result.returncode == 1
    assert "cannot reach Redis at redis://:***@127.0.0.1:" in result.stderr
    assert "secret" not in result.stderr


@pytest.mark.parametrize(("answer", "code", "left"), [("n", 1, 1), ("", 1, 1), ("y", 0, 0)])
def test_reset_asks_on_a_terminal(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    answer: str,
    code: int,
    left: int,
) -> None:
    from apps.olympics import cli

    with redis_server.client() as client:
        client.set("olympics:created-by-hand", "x")
        client.sadd("olympics:created", "purchase_order_details:1")
        client.hset("purchase_order_details:1", "who", "Jim")
    questions: list[str] = []
    monkeypatch.setattr(cli, "_interactive", lambda: True)
    monkeypatch.setattr("builtins.input", lambda question: questions.append(question) or answer)
    assert cli.main(["reset", "--url", redis_server.url]) == code
    assert questions == [
        f"Delete the 2 key(s) the app created at {redis_server.url} under the tutorial's key names? [y/N] "
    ]
    with redis_server.client() as client:
        assert client.exists("purchase_order_details:1") == left
        assert client.exists("olympics:created-by-hand") == 1  # never recorded: never deleted
    assert ("nothing deleted" if left else "deleted 2 key(s)") in capsys.readouterr().out


def test_reset_on_the_demos_own_server_does_not_ask(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo marks a server the runner started for it; there, nothing else can be lost."""
    from apps.olympics import cli

    with redis_server.client() as client:
        client.set("olympics:throwaway-server", "x")
        client.sadd("olympics:created", "events")
        client.sadd("events", "Womens Judo")
    monkeypatch.setattr(cli, "_interactive", lambda: False)
    assert cli.main(["reset", "--url", redis_server.url]) == 0
    with redis_server.client() as client:
        assert keys(client) == []
