"""`python -m eventbus check`: exit 0 when Redis (and the module) would work; else one line, and 1 (2: bad module)."""

from __future__ import annotations

import pytest
import redis

from eventbus._cli import main
from tests.redis_server import RedisServer, acl_denials, free_port


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_when_redis_answers(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(capsys, "--url", redis_server.url)
    assert code == 0 and err == ""
    assert out.startswith(f"ok: Redis at {redis_server.url} answered PING in ")


def test_check_fails_in_one_line_when_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    code, out, err = check(capsys, "--url", url, "--connect-timeout", "0.3")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"eventbus: error: Redis at {url} did not answer")


def test_check_with_a_module(
    redis_server: RedisServer, sync_redis: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = check(capsys, "--url", redis_server.url, "--module", "tests.sample_apps.ledger")
    assert code == 0 and "tests.sample_apps.ledger: 2 handler(s)" in out and "1 stream(s) usable" in out
    code, out, _ = check(capsys, "--url", redis_server.url, "--module", "tests.sample_apps.orders")
    assert code == 0 and "channel(s) and 1 pattern(s) subscribable" in out

    sync_redis.set("ledger", "not a stream")
    code, out, err = check(capsys, "--url", redis_server.url, "--module", "tests.sample_apps.ledger")
    assert code == 1 and out == ""
    assert err == "eventbus: error: tests.sample_apps.ledger: key 'ledger' is a string, not a stream\n"

    code, _, err = check(capsys, "--url", redis_server.url, "--module", "tests.sample_apps.nope")
    assert code == 2 and "not found" in err


def test_check_names_a_subscription_the_acl_refuses(
    own_redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    own_redis_server.client().execute_command(
        "ACL", "SETUSER", "orders", "on", ">secret", "~*", "+@all", "&purchase_orders"
    )
    url = f"redis://orders:secret@127.0.0.1:{own_redis_server.port}/0"
    code, out, err = check(capsys, "--url", url, "--module", "tests.sample_apps.orders")
    assert code == 1 and out == ""
    assert err.startswith("eventbus: error: Redis refused SUBSCRIBE to 'purchase_orders:Opening Ceremony': NOPERM")
    assert err.count("\n") == 1 and "secret" not in err


def test_check_fails_when_the_dead_letter_stream_is_not_writable(
    own_redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failures would be lost: check --module says so before a runner starts (exit 1, one line)."""
    with own_redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "runner", "on", ">pw", "allchannels", "-@all", "+ping", "+info",
            "+@pubsub", "~eventbus:dead-letter", "~shop:dead-letter", "+xadd", "+xlen", "+xtrim", "+memory|usage",
        )  # fmt: skip
        admin.execute_command("ACL", "SETUSER", "nodl", "on", ">pw", "allchannels", "-@all")
        admin.execute_command("ACL", "SETUSER", "nodl", "+ping", "+info", "+@pubsub", "~other", "+xadd")
    module = ("--module", "tests.sample_apps.orders")
    code, out, _ = check(capsys, "--url", f"redis://runner:pw@127.0.0.1:{own_redis_server.port}/0", *module)
    assert code == 0 and out.rstrip().endswith("; dead letters writable to 'eventbus:dead-letter'")
    code, out, _ = check(
        capsys, "--url", f"redis://runner:pw@127.0.0.1:{own_redis_server.port}/0", *module,
        "--dead-letter-stream", "shop:dead-letter",
    )  # fmt: skip
    assert code == 0 and out.rstrip().endswith("; dead letters writable to 'shop:dead-letter'")

    code, out, err = check(capsys, "--url", f"redis://nodl:pw@127.0.0.1:{own_redis_server.port}/0", *module)
    assert code == 1 and out == ""
    assert err.count("\n") == 1
    assert err.startswith("eventbus: error: dead letters cannot be written to 'eventbus:dead-letter': NOPERM")
    with own_redis_server.client() as admin:
        assert not admin.exists("eventbus:dead-letter")  # the probe wrote nothing
        # The dead-letter part of the runner's ACL was refused nothing; nodl only the probe's XADD.
        denied = [d for d in acl_denials(admin) if d[1] != "client|setname"]  # (SETNAME: not a dead-letter need)
        assert denied == [("nodl", "xadd", "eventbus:dead-letter")]
