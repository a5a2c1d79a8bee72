"""Replay's trust boundary, against real redis-server processes (ACL users where it is about permissions).

The module the operator names decides where an entry may go; entries forged by anyone who may
write the dead-letter stream are refused and stay where they are.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from eventbus import Channel, DeadLetterStore, Message, connect, on
from eventbus._deadletter import parse_entry
from eventbus._history import history_keys, parse_envelope
from eventbus._replay import Target, claimed_target, replay_dead_letters, replay_verdict
from eventbus._router import Router, load_target
from eventbus._settings import DEFAULT_DEAD_LETTER_STREAM as DEFAULT_STREAM
from tests.cli_process import run_eventbus
from tests.redis_server import RedisServer, acl_denials

MODULE = "tests.sample_apps.failing"


def entry(handler: str = "pay", channel: str = "payments", payload: bytes = b"p", **extra: Any) -> dict[str, Any]:
    """The fields eventbus writes for a dead letter (``extra`` adds or overrides some)."""
    fields: dict[str, Any] = {"handler": handler, "channel": channel, "pattern": "", "payload": payload}
    return fields | {"error": "RuntimeError: x", "attempts": 1, "ts": "1700000000.5"} | extra


def add(client: redis.Redis, fields: dict[str, Any], stream: str = DEFAULT_STREAM) -> str:
    return str(client.xadd(stream, fields).decode())  # type: ignore[union-attr]


class Listener:
    """A plain redis-py subscriber: what actually got published, whoever published it."""

    def __init__(self, server: RedisServer, *channels: str) -> None:
        self.client = server.client()
        self.pubsub = self.client.pubsub()
        self.pubsub.subscribe(*channels)
        for _ in channels:
            self.pubsub.get_message(timeout=5)  # the subscribe confirmations

    def received(self, wait: float = 0.3) -> list[tuple[bytes, bytes]]:
        got = []
        while (message := self.pubsub.get_message(timeout=wait)) is not None:
            got.append((message["channel"], message["data"]))
        return got

    def close(self) -> None:
        self.pubsub.close()
        self.client.close()


@pytest.fixture
def listener(redis_server: RedisServer) -> Iterator[Listener]:
    watching = Listener(redis_server, "payments", "admin.commands", "audit.login", "payroll.x", "orders")
    yield watching
    watching.close()


def router() -> Router:
    return load_target(MODULE)


def test_judge_checks_the_entry_against_the_handlers_subscriptions() -> None:
    app = router()

    def verdict(**fields: Any) -> str | None:
        return replay_verdict(app, parse_entry("1-1", entry(**fields))).refusal

    assert verdict() is None  # pay subscribes to payments
    assert verdict(channel="audit.login", handler="audit") is None  # matches its pattern audit.*
    assert verdict(channel="refunds", handler="refund", stream="refunds") is None
    assert "does not subscribe to channel 'admin.commands'" in str(verdict(channel="admin.commands"))
    assert "nor to a pattern" in str(verdict(channel="auditX", handler="audit"))
    assert "no handler named 'boom'" in str(verdict(handler="boom"))
    # Both fields, disagreeing: replay would use the stream, and refuses.
    forged = parse_entry("1-1", entry(handler="refund", channel="orders", stream="payments"))
    assert claimed_target(forged) == (Target("stream", "payments"), "its channel field says 'orders'")
    assert "inconsistent entry" in str(replay_verdict(app, forged).refusal)
    assert "does not consume stream 'payments'" in str(verdict(handler="refund", channel="payments", stream="payments"))
    assert "malformed entry (attempts 'abc' is not a number)" in str(verdict(attempts="abc"))
    assert "no payload field" in str(
        replay_verdict(app, parse_entry("1-1", {"handler": "pay", "channel": "payments"})).refusal
    )

    @on("orders:eu", sharded=True)
    async def sharded(msg: Any, ctx: Any) -> None: ...

    assert replay_verdict(Router([sharded]), parse_entry("1-1", entry("sharded", "orders:eu"))).target == Target(
        "sharded", "orders:eu"
    )


async def test_replay_sends_back_only_where_the_handler_reads(redis_server: RedisServer, listener: Listener) -> None:
    with redis_server.client() as client:
        good = add(client, entry(payload=b"good"))
        admin = add(client, entry(channel="admin.commands", payload=b'{"cmd":"drop_all_users"}'))
        overridden = add(client, entry("refund", "orders", b'{"amount":-1000000}', stream="payments"))
        unknown = add(client, entry("boom", "orders", b"boom"))
        via_pattern = add(client, entry("audit", "audit.login", b"login"))
        off_pattern = add(client, entry("audit", "payroll.x", b"payroll"))
        on_stream = add(client, entry("refund", "refunds", b"refund", stream="refunds"))

    async with connect(redis_server.url) as bus:
        report = await replay_dead_letters(DeadLetterStore(bus.redis), router())

    actions = {o.id: o.action for o in report.outcomes}
    assert actions == {
        good: "replayed",
        admin: "refused",
        overridden: "refused",
        unknown: "refused",
        via_pattern: "replayed",
        off_pattern: "refused",
        on_stream: "replayed",
    }
    assert not report.complete
    assert sorted(listener.received()) == [(b"audit.login", b"login"), (b"payments", b"good")]
    with redis_server.client() as client:
        assert not client.exists("payments")  # the forged stream field did not reach the stream
        assert [f for _, f in client.xrange("refunds")] == [{b"data": b"refund"}]
        left = [i.decode() for i, _ in client.xrange(DEFAULT_STREAM)]
    assert left == [admin, overridden, unknown, off_pattern]  # refused entries stay, as they were


async def test_a_dry_run_changes_nothing(redis_server: RedisServer, listener: Listener) -> None:
    with redis_server.client() as client:
        good = add(client, entry())
        forged = add(client, entry(channel="admin.commands"))
    async with connect(redis_server.url) as bus:
        report = await replay_dead_letters(DeadLetterStore(bus.redis), router(), dry_run=True)
    assert [(o.id, o.action) for o in report.outcomes] == [(good, "would replay"), (forged, "refused")]
    assert listener.received() == []
    with redis_server.client() as client:
        assert client.xlen(DEFAULT_STREAM) == 2


async def test_two_concurrent_replays_send_each_entry_once(redis_server: RedisServer, listener: Listener) -> None:
    with redis_server.client() as client:
        pipe = client.pipeline(transaction=False)
        for i in range(300):
            pipe.xadd(DEFAULT_STREAM, entry(payload=str(i).encode()))
        pipe.execute()
    app = router()
    async with connect(redis_server.url) as one, connect(redis_server.url) as two:
        reports = await asyncio.gather(
            replay_dead_letters(DeadLetterStore(one.redis), app), replay_dead_letters(DeadLetterStore(two.redis), app)
        )
    replayed = [o.id for r in reports for o in r.outcomes if o.action == "replayed"]
    skipped = [o.id for r in reports for o in r.outcomes if o.action == "skipped"]
    assert len(replayed) == 300 and len(set(replayed)) == 300
    assert not set(skipped) - set(replayed)  # a skipped entry was replayed by the other one
    received = [data for _, data in listener.received()]
    assert sorted(received, key=int) == [str(i).encode() for i in range(300)]  # each exactly once
    with redis_server.client() as client:
        assert client.xlen(DEFAULT_STREAM) == 0


@pytest.fixture
def operator(own_redis_server: RedisServer) -> RedisServer:
    """'operator' may replay to 'payments' only: PUBLISH on audit.* is refused."""
    with own_redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "operator", "on", ">op-pw", "resetchannels", "&payments", "-@all",
            "+ping", "+xrange", "+xrevrange", "+xdel", "+xadd", "+publish", f"~{DEFAULT_STREAM}",
        )  # fmt: skip
    return own_redis_server


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_eventbus("dead-letters", *args, env=env)


def test_a_failure_part_way_names_what_was_replayed_and_what_was_not(
    operator: RedisServer, subprocess_env: dict[str, str]
) -> None:
    with operator.client() as client:
        first = add(client, entry(payload=b"1"))
        denied = add(client, entry("audit", "audit.login", b"2"))
        last = add(client, entry(payload=b"3"))
    url = f"redis://operator:op-pw@127.0.0.1:{operator.port}/0"
    result = cli("replay", "--all", "--module", "sample_apps.failing", "--url", url, env=subprocess_env)
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"replayed      {first} pay -> channel 'payments'"
    assert lines[1].startswith(f"failed        {denied} audit -> channel 'audit.login': NoPermissionError: ")
    assert "written back to the stream as " in lines[1]
    assert lines[2] == f"replayed      {last} pay -> channel 'payments'"
    assert lines[3] == f"2 replayed, 1 failed of 3 dead letter(s) in '{DEFAULT_STREAM}'"
    with operator.client() as client:
        [(new_id, fields)] = client.xrange(DEFAULT_STREAM)  # the one not replayed, written back whole
        assert new_id.decode() in lines[1] and fields[b"payload"] == b"2" and fields[b"handler"] == b"audit"
        # The tools' documented ACL: nothing else was attempted (the denied PUBLISH is the test's point).
        assert acl_denials(client) == [("operator", "publish", "audit.login")]


def test_replay_without_a_module_is_refused_in_one_line(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    with redis_server.client() as client:
        add(client, entry())
    result = cli("replay", "--all", "--url", redis_server.url, env=subprocess_env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "needs --module MODULE" in result.stderr
    with redis_server.client() as client:
        assert client.xlen(DEFAULT_STREAM) == 1


async def test_a_recoverable_channel_gets_its_dead_letters_back_through_its_history(redis_server: RedisServer) -> None:
    """Replayed to a handler subscribed with a recoverable Channel, an entry is appended to the
    channel's history and published with its offset, like any message of the channel: a handler
    that misses it in a gap (or resumes after a restart) still gets it."""
    invoices = Channel("invoices", history=100)

    @on(invoices, name="bill")
    async def bill(msg: Message, ctx: Any) -> None: ...

    with redis_server.client() as client:
        add(client, entry("bill", "invoices", b"inv-1"))
        watching = Listener(redis_server, "invoices")
        try:
            async with connect(redis_server.url) as bus:
                report = await replay_dead_letters(DeadLetterStore(bus.redis), Router([bill]))
            assert [o.action for o in report.outcomes] == ["replayed"]
            [(_, published)] = watching.received()
        finally:
            watching.close()
        envelope = parse_envelope(published)
        assert envelope is not None and envelope.payload == b"inv-1" and envelope.offset == 1
        stream, _ = history_keys("invoices")
        assert [fields[b"d"] for _, fields in client.xrange(stream)] == [b"inv-1"]
