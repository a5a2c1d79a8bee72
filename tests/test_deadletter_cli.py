"""`python -m eventbus dead-letters list|replay` facing hostile entries, against a real redis-server.

Whatever an entry holds, each value is printed escaped and cut short, `list` leaves payloads on
the server, and `replay --id` reads that entry alone.
"""

from __future__ import annotations

import subprocess
from typing import Any

import redis

from eventbus._deadletter_cli import shown
from eventbus._settings import DEFAULT_DEAD_LETTER_STREAM as DEFAULT_STREAM
from tests.cli_process import run_eventbus
from tests.redis_server import RedisServer, acl_denials

ENTRY = {"pattern": "", "attempts": 1, "ts": "1700000000.5"}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_eventbus("dead-letters", *args, env=env)


def add(client: redis.Redis, **fields: Any) -> str:
    return str(client.xadd(DEFAULT_STREAM, ENTRY | fields).decode())  # type: ignore[union-attr]


def test_shown_escapes_and_cuts() -> None:
    assert shown("a\nb\x1b[2J\tc\\") == "a\\nb\\x1b[2J\\tc\\\\"
    assert shown("\udcff\u202e\u2028") == "\\xff\\u202e\\u2028"  # a raw byte, a bidi override, a line separator
    assert shown("x" * 10, 4) == "xxxx...(+6 chars)"
    assert shown("ünïcode ok") == "ünïcode ok"


def test_list_prints_every_field_escaped_and_cut(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    with redis_server.client() as client:
        forged = add(
            client,
            handler="boom\n2026-12-06 10:00:00 INFO fake line\x1b[2J\x1b[H",
            channel="orders\x1b[31m",
            payload=b"x",
            error="E" * 10_000_000,
        )
        malformed = add(client, handler="pay", channel="payments", payload=b"p", error="e", attempts="abc", ts="nope")
        missing = str(client.xadd(DEFAULT_STREAM, {"foo": "bar"}).decode())
        both = add(client, handler="refund", channel="orders", stream="payments", payload=b"{}", error="e")
    result = cli("list", "--url", redis_server.url, env=subprocess_env)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 5  # one per entry and the count: no injected line
    assert "\x1b" not in result.stdout and max(len(line) for line in lines) < 1000
    assert lines[0].startswith(
        f"{forged}  boom\\n2026-12-06 10:00:00 INFO fake line\\x1b[2J\\x1b[H  channel 'orders\\x1b[31m'  attempts=1  "
        "1 bytes  2023-11-14 22:13:20Z  ?:?  EEEE"
    )
    assert "...(+" in lines[0]  # the error was cut
    assert lines[1] == (
        f"{malformed}  pay  channel 'payments'  attempts='abc'  1 bytes  ts='nope'  ?:?  e  "
        "[malformed: attempts 'abc' is not a number; ts 'nope' is not a number]"
    )
    assert (
        lines[2].startswith(f"{missing}  ''  no target  attempts=''  0 bytes  ts=''") and "no handler field" in lines[2]
    )
    # What replay would use, the stream, and that it refuses the entry whose fields disagree.
    assert lines[3].startswith(f"{both}  refund  stream 'payments'  ")
    assert lines[3].endswith("[refused by replay: its channel field says 'orders']")

    replay = cli(
        "replay", "--id", malformed, "--id", both, "--module", "sample_apps.failing", "--url", redis_server.url,
        env=subprocess_env,
    )  # fmt: skip
    assert replay.returncode == 1 and "Traceback" not in replay.stderr
    assert replay.stdout.splitlines() == [
        f"refused       {malformed} pay -> channel 'payments': malformed entry (attempts 'abc' is not a number; "
        "ts 'nope' is not a number)",
        f"refused       {both} refund -> stream 'payments': inconsistent entry: its channel field says 'orders'",
        f"0 replayed, 2 refused of 2 dead letter(s) in '{DEFAULT_STREAM}'",
    ]


def output_bytes(client: redis.Redis) -> int:
    return int(client.info("stats")["total_net_output_bytes"])


def test_list_and_replay_by_id_leave_the_other_payloads_on_the_server(
    own_redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """2,000 entries of 20 KB: list sends no payload, replay --id sends one entry, whatever the stream holds."""
    payload = b"x" * 20_000
    with own_redis_server.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(2_000):
            pipe.xadd(DEFAULT_STREAM, ENTRY | {"handler": "pay", "channel": "payments", "payload": payload, "error": i})
        ids = [i.decode() for i in pipe.execute()]
        # The tools' ACL as the README documents it, and nothing more.
        client.execute_command(
            "ACL", "SETUSER", "tools", "on", ">pw", "resetchannels", "&payments", "-@all", "+ping", "+eval_ro",
            "+xrange", "+xrevrange", "+xdel", "+xadd", "+publish", f"~{DEFAULT_STREAM}",
        )  # fmt: skip
        url = f"redis://tools:pw@127.0.0.1:{own_redis_server.port}/0"

        before = output_bytes(client)
        listing = cli("list", "--count", "2000", "--url", url, env=subprocess_env)
        assert listing.returncode == 0, listing.stderr
        assert len(listing.stdout.splitlines()) == 2001 and "  20000 bytes  " in listing.stdout
        assert output_bytes(client) - before < 1_000_000  # not the 40 MB of payloads

        client.config_set("slowlog-log-slower-than", 0)
        client.slowlog_reset()
        before = output_bytes(client)
        replay = cli("replay", "--id", ids[1000], "--module", "sample_apps.failing", "--url", url, env=subprocess_env)
        assert replay.returncode == 0, replay.stderr
        assert output_bytes(client) - before < 100_000  # one entry of 20 KB, not the stream
        reads = [e["command"] for e in client.slowlog_get(128) if e["command"].startswith(b"XRANGE")]
        assert reads == [f"XRANGE {DEFAULT_STREAM} {ids[1000]} {ids[1000]} COUNT 1".encode()]
        assert client.xlen(DEFAULT_STREAM) == 1_999
        assert [d for d in acl_denials(client) if d[1] != "client|setname"] == []
