"""The producer side: `python -m apps.broadcast send|bulk|serve` against a private redis-server."""

from __future__ import annotations

import io
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from apps.broadcast.cli import main
from apps.broadcast.progress import Progress

FROM = "+12028165004"
TO = "+5584981341213"


@pytest.fixture
def subscriber(redis_server: Any) -> Iterator[Any]:
    """A stand-in for the broadcast service: a pattern subscription on channel-*."""
    client: Any = redis.Redis.from_url(redis_server.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.psubscribe("channel-*")
    while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
        pass
    yield pubsub
    pubsub.close()
    client.close()


def received(pubsub: Any, n: int, timeout: float = 5.0) -> list[tuple[str, dict[str, str]]]:
    """What the stand-in got: the channel and the payload without its idempotency key (each has
    a new one); the channels keep a history, so each arrives in eventbus's documented envelope."""
    messages: list[tuple[str, dict[str, str]]] = []
    deadline = time.monotonic() + timeout
    while len(messages) < n and time.monotonic() < deadline:
        msg = pubsub.get_message(timeout=0.5)
        if msg is not None and msg["type"] == "pmessage":
            assert msg["data"].startswith(b"\x00EB")  # \x00EB<offset>:<epoch>:<payload>
            payload = orjson.loads(msg["data"].split(b":", 2)[2])
            assert len(payload.pop("key")) == 32
            messages.append((msg["channel"].decode(), payload))
    return messages


def test_send_publishes_the_tutorial_payload(
    redis_server: Any, subscriber: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["send", "--url", redis_server.url, "--kind", "alert", "--to", TO, "--from", FROM, "--message", "hi"]
    assert main(argv) == 0
    assert received(subscriber, 1) == [("channel-alert", {"message": "hi", "from": FROM, "to": TO})]
    out = capsys.readouterr().out
    assert "channel-alert" in out and "+5584*****1213" in out and TO not in out


def test_send_with_no_subscriber_says_it_was_not_delivered(
    redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["send", "--url", redis_server.url, "--to", TO, "--from", FROM, "--message", "hi"]) == 2
    assert "no subscriber on channel-broadcast" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--to", "5584981341213", "--from", FROM, "--message", "hi"], "'to' is not an E.164"),
        (["--to", TO, "--from", FROM, "--message", "x" * 1601], "the limit is 1600"),
        (["--to", TO, "--from", FROM, "--message", "hi", "--kind", "a*"], "kind must be a word"),
    ],
)
def test_send_refuses_invalid_input_before_connecting(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["send", "--url", "redis://127.0.0.1:1/0", *args]) == 1
    assert error in capsys.readouterr().err


def test_bulk_from_csv(redis_server: Any, subscriber: Any, tmp_path: Path) -> None:
    path = tmp_path / "recipients.csv"
    path.write_text(
        "name,to,message\n"
        f"Ana,{TO},Your appointment is tomorrow\n"
        "Bia, +5584981341214 ,\n"  # stray spaces; empty message -> the default
        "\n",
        encoding="utf-8",
    )
    argv = ["bulk", str(path), "--url", redis_server.url, "--from", FROM, "--message", "Hello", "--kind", "reminder"]
    assert main(argv) == 0
    assert received(subscriber, 2) == [
        ("channel-reminder", {"message": "Your appointment is tomorrow", "from": FROM, "to": TO}),
        ("channel-reminder", {"message": "Hello", "from": FROM, "to": "+5584981341214"}),
    ]


def test_bulk_from_json_with_skip_and_rate(redis_server: Any, subscriber: Any, tmp_path: Path) -> None:
    path = tmp_path / "recipients.json"
    entries: list[object] = [{"to": f"+558498134{i:04d}", "message": f"m{i}"} for i in range(5)]
    entries.append("+5584981349999")  # a bare number uses the defaults
    path.write_text(json.dumps(entries), encoding="utf-8")
    started = time.monotonic()
    argv = ["bulk", str(path), "--url", redis_server.url, "--from", FROM, "--message", "d", "--skip", "2"]
    assert main([*argv, "--rate", "40"]) == 0
    assert time.monotonic() - started >= 3 / 40  # 4 messages at 40/s: 3 intervals at least
    got = received(subscriber, 4)
    assert [m["to"] for _, m in got] == ["+5584981340002", "+5584981340003", "+5584981340004", "+5584981349999"]
    assert got[-1][1]["message"] == "d"


def test_bulk_with_invalid_rows_publishes_nothing(
    redis_server: Any, subscriber: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "recipients.jsonl"
    path.write_text(
        json.dumps({"to": TO, "from": FROM, "message": "ok"})
        + "\n"
        + json.dumps({"to": "12345", "from": FROM, "message": "bad number"})
        + "\n"
        + json.dumps({"to": TO, "message": "no sender"})
        + "\n",
        encoding="utf-8",
    )
    assert main(["bulk", str(path), "--url", redis_server.url]) == 1
    err = capsys.readouterr().err
    assert "2 invalid entries, nothing was published" in err
    assert "line 2: field 'to' is not an E.164" in err and "line 3: no 'from'" in err
    assert "12345" not in err.replace("line ", "")  # values are not echoed
    assert received(subscriber, 1, timeout=0.3) == []


def test_bulk_stops_at_the_first_message_nobody_received(
    redis_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "r.csv"
    path.write_text(f"to,from,message\n{TO},{FROM},a\n{TO},{FROM},b\n", encoding="utf-8")
    assert main(["bulk", str(path), "--url", redis_server.url]) == 2
    err = capsys.readouterr().err
    assert "stopped at entry 1 (0 delivered before it)" in err and "--skip 1" in err and "--skip 0" in err


def test_progress_bar_draws_to_its_stream() -> None:
    stream = io.StringIO()
    progress = Progress(4, "publishing", stream=stream, enabled=True)
    for _ in range(4):
        progress.advance()
    progress.close()
    assert "publishing [" + "#" * 30 + "] 4/4 100%" in stream.getvalue()
    quiet = io.StringIO()
    Progress(4, "publishing", stream=quiet).advance()  # not a terminal: stays quiet
    assert quiet.getvalue() == ""


def test_serve_dry_run_runs_the_service_under_eventbus(
    redis_server: Any, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in subprocess_env.items() if not k.startswith(("TWILIO_", "BROADCAST_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "apps.broadcast", "serve", "--dry-run", "--url", redis_server.url],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr or []:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if text in line:
                return line
        raise AssertionError(f"{text!r} not logged")

    try:
        wait_for("subscribed")
        with redis.Redis.from_url(redis_server.url) as client:
            client.publish("channel-alert", orjson.dumps({"message": "secret", "from": FROM, "to": TO}))
        line = wait_for("dry-run: would send")
        assert "6 chars from +1202***5004 to +5584*****1213" in line
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0


def test_serve_without_credentials_fails_at_startup_with_a_clear_message(
    redis_server: Any, subprocess_env: dict[str, str]
) -> None:
    env = {k: v for k, v in subprocess_env.items() if not k.startswith(("TWILIO_", "BROADCAST_"))}
    result = subprocess.run(
        [sys.executable, "-m", "apps.broadcast", "serve", "--url", redis_server.url],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN not set" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.environ.get("BROADCAST_DRY_RUN") is None
