"""`python -m eventbus check`: exit 0 when Redis (and the module) would work; else one line, and 1 (2: bad module)."""

from __future__ import annotations

import pytest
import redis

from eventbus.cli import main
from tests.redis_server import RedisServer, free_port


def check(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["check", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_when_redis_answers(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(capsys, "--url", redis_server.url)
    assert code == 0 and err == ""
    assert out.startswith("ok: Redis 7.") and redis_server.url in out


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
