"""The dashboard over HTTP: safe by default, token enforced, cross-site POSTs refused, replay through
the trust boundary, payloads masked. The browser drives it in tests/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import json
import re
import time
from urllib.parse import urlencode

import pytest
import redis

from eventbus import Channel, connect
from eventbus._dashboard import ENV_TOKEN
from tests.cli_process import run_eventbus
from tests.dashboard_process import dashboard, needs_extra, runner
from tests.dashboard_process import request as get
from tests.histories import append_unpublished
from tests.redis_server import RedisServer
from tests.sample_apps import dashboard_demo, dashboard_recovery

pytestmark = needs_extra
TOKEN = "s3cret-token-of-the-tests"
PHONE = "+5584981341213"


def _dead_letter(client: redis.Redis, url: str, env: dict[str, str]) -> str:
    """One dead letter of record_order, written by a real runner; its id."""
    client.set(dashboard_demo.BROKEN, 1)
    with runner(url, env, "sample_apps.dashboard_demo"):
        client.publish(dashboard_demo.CHANNEL, f'{{"to": "{PHONE}"}}')
        deadline = time.monotonic() + 30
        while not client.xlen("eventbus:dead-letter"):
            assert time.monotonic() < deadline, "no dead letter written"
            time.sleep(0.05)
    client.delete(dashboard_demo.BROKEN)
    [(entry_id, _)] = client.xrange("eventbus:dead-letter")
    return str(entry_id.decode())


def _csrf(page: str) -> str:
    match = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert match, page
    return match.group(1)


def test_binding_beyond_loopback_needs_a_token(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    subprocess_env.pop(ENV_TOKEN, None)
    done = run_eventbus("dashboard", "--url", redis_server.url, "--host", "0.0.0.0", env=subprocess_env, timeout=60)
    assert done.returncode == 2
    assert "needs a token" in done.stderr and ENV_TOKEN in done.stderr


def test_the_token_is_enforced_everywhere(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    subprocess_env[ENV_TOKEN] = TOKEN
    with dashboard(redis_server.url, subprocess_env) as address:
        for path in ("", "live", "dashboard.js"):
            status, _, body = get(address, path)
            assert status == 401, path
            assert TOKEN not in body
        assert get(address, "", headers={"Authorization": "Bearer wrong-token-wrong-token"})[0] == 401
        status, headers, body = get(address, "live", headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and headers["content-type"] == "application/json"
        # Given once in the URL, it comes back as a cookie and the URL loses it.
        status, headers, _ = get(address, f"?token={TOKEN}&handler=x")
        assert status == 303 and headers["location"] == "/?handler=x"
        cookie = headers["set-cookie"].split(";")[0]
        assert "httponly" in headers["set-cookie"].lower() and "samesite=strict" in headers["set-cookie"].lower()
        status, headers, page = get(address, "", headers={"Cookie": cookie})
        assert status == 200 and "Processes" in page
        assert "default-src 'none'" in headers["content-security-policy"]
        assert get(address, "", headers={"Cookie": "eventbus_dashboard=nope"})[0] == 401


def test_the_redis_password_never_shows(own_redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    with own_redis_server.client() as client:
        client.config_set("requirepass", "hunter2-hunter2")
    try:
        url = f"redis://:hunter2-hunter2@127.0.0.1:{own_redis_server.port}/0"
        with dashboard(url, subprocess_env) as address:
            status, _, page = get(address)
            assert status == 200 and "hunter2" not in page and str(own_redis_server.port) in page
    finally:
        own_redis_server.stop()  # its client() has no password: stop it here rather than in the fixture


def test_a_foreign_host_is_refused_without_a_token(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    # DNS rebinding: another site's name resolved to 127.0.0.1 reaches the dashboard with its own Host.
    with dashboard(redis_server.url, subprocess_env) as address:
        assert get(address, "", headers={"Host": "evil.example"})[0] == 403
        assert get(address)[0] == 200


def test_cross_site_posts_are_refused(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    entry = _dead_letter(sync_redis, redis_server.url, subprocess_env)
    with dashboard(redis_server.url, subprocess_env) as address:
        csrf = _csrf(get(address)[2])
        form = urlencode({"csrf": csrf, "id": entry}).encode()
        for headers in (
            {"Origin": "http://evil.example"},
            {"Sec-Fetch-Site": "cross-site"},
            {"Sec-Fetch-Site": "same-site"},
        ):
            status, _, body = get(address, "dead-letters/delete", data=form, headers=headers)
            assert status == 403 and "refused" in body, headers
        no_csrf = urlencode({"id": entry}).encode()
        assert get(address, "dead-letters/delete", data=no_csrf)[0] == 403
        assert get(address, "dead-letters/delete")[0] in (403, 405)  # a GET changes nothing
        assert sync_redis.xlen("eventbus:dead-letter") == 1
        status, headers, _ = get(address, "dead-letters/delete", data=form, headers={"Sec-Fetch-Site": "same-origin"})
        assert status == 303 and "1+deleted" in headers["location"]
        assert sync_redis.xlen("eventbus:dead-letter") == 0


def test_payloads_are_masked_and_replay_needs_the_module(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    entry = _dead_letter(sync_redis, redis_server.url, subprocess_env)
    with dashboard(redis_server.url, subprocess_env) as address:
        page = get(address)[2]
        assert "Replay is off" in page and "start the dashboard with --module" in page
        assert "the ledger is closed" in page
        form = urlencode({"csrf": _csrf(page), "id": entry}).encode()
        status, headers, _ = get(address, "dead-letters/replay", data=form)
        assert status == 303 and "refused" in headers["location"]
        assert sync_redis.xlen("eventbus:dead-letter") == 1
    with dashboard(redis_server.url, subprocess_env, "--module", "sample_apps.dashboard_demo") as address:
        page = get(address)[2]
        assert PHONE not in page and "*********1213" in page
        assert f'name="id" value="{entry}" formaction="dead-letters/replay">Replay</button>' in page


def test_a_forged_entry_is_refused_by_replay(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    # An entry naming a real handler but a channel it does not read (issue 20): not replayable.
    forged = sync_redis.xadd(
        "eventbus:dead-letter",
        {"handler": "record_order", "channel": "payments:refund-all", "payload": b"x", "error": "e", "attempts": 1,
         "ts": time.time()},
    )  # fmt: skip
    entry = forged.decode()
    with dashboard(redis_server.url, subprocess_env, "--module", "sample_apps.dashboard_demo") as address:
        page = get(address)[2]
        assert "not replayable" in page and "does not subscribe to channel" in page
        form = urlencode({"csrf": _csrf(page), "scope": "matching"}).encode()
        status, headers, _ = get(address, "dead-letters/replay", data=form)
        assert status == 303 and "1+refused" in headers["location"]
    assert [e for e, _ in sync_redis.xrange("eventbus:dead-letter")] == [entry.encode()]


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_it_serves_a_cluster_and_sentinel(
    kind: str, request: pytest.FixtureRequest, subprocess_env: dict[str, str]
) -> None:
    if kind == "cluster":
        url = str(request.getfixturevalue("redis_cluster").url)
    else:
        url = str(request.getfixturevalue("redis_sentinel")[1].url)
    with runner(url, subprocess_env, "sample_apps.dashboard_streams"), dashboard(url, subprocess_env) as address:
        deadline = time.monotonic() + 30
        while "running" not in (sections := get(address, "live")[2]) or "billing" not in sections:
            assert time.monotonic() < deadline, sections
            time.sleep(0.2)


def test_forged_heartbeats_and_notices_change_nothing(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    # Anyone who may write to Redis may write a heartbeat: markup is escaped, a key that is not a
    # stream is skipped, and a link cannot put words on the page.
    forged = {
        "app": "<script>alert(1)</script>",
        "handlers": [{"name": "h", "streams": [{"stream": "not-a-stream", "group": "g", "max_deliveries": 1}]}],
        "ts": time.time(),
    }
    sync_redis.hset("eventbus:{heartbeat}:processes", "evil:1", json.dumps(forged))
    sync_redis.set("eventbus:{heartbeat}:alive:evil:1", 1, ex=60)
    sync_redis.set("not-a-stream", "x")
    # A handler's error may quote the URL it failed on: shown without its password.
    error = "ConnectionError: redis://bob:s3cret-pw@db:6379/0 refused"
    sync_redis.xadd("eventbus:dead-letter", {"handler": "h", "channel": "c", "payload": "p", "error": error})
    with dashboard(redis_server.url, subprocess_env) as address:
        status, _, page = get(address, "?done=Your+session+expired")
        assert status == 200 and "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
        assert "session expired" not in page
        assert "s3cret-pw" not in page and "redis://bob:***@db:6379/0" in page


def test_a_selection_and_a_filter_choose_what_is_deleted(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    ids = [
        sync_redis.xadd("eventbus:dead-letter", {"handler": h, "channel": "c", "payload": "p", "error": e}).decode()
        for h, e in (("a", "timeout"), ("b", "timeout"), ("c", "KeyError"), ("d", "KeyError"))
    ]
    with dashboard(redis_server.url, subprocess_env) as address:
        page = get(address, "?error=keyerror")[2]
        assert ids[2] in page and ids[3] in page and ids[0] not in page  # filtered, case-insensitively
        selected = urlencode([("csrf", _csrf(page)), ("scope", "selected"), ("selected", ids[0]), ("selected", ids[1])])
        status, headers, _ = get(address, "dead-letters/delete", data=selected.encode())
        assert status == 303 and "2+deleted" in headers["location"]
        matching = urlencode({"csrf": _csrf(page), "scope": "matching", "handler": "c", "error": "KeyError"})
        status, headers, _ = get(address, "dead-letters/delete", data=matching.encode())
        assert status == 303 and "1+deleted" in headers["location"]
    assert [e.decode() for e, _ in sync_redis.xrange("eventbus:dead-letter")] == [ids[3]]


async def _publish(url: str, channel: Channel, data: bytes) -> None:
    async with connect(url) as bus:
        await bus.publish(channel, data)


def test_recoverable_channels_show_summed_over_processes(
    redis_server: RedisServer, sync_redis: redis.Redis, subprocess_env: dict[str, str]
) -> None:
    payments = dashboard_recovery.PAYMENTS
    # A second process with figures of its own, and a channel named with markup (heartbeats are
    # anyone's to write): summed per channel, a warning in words, everything escaped.
    forged = {
        "host": "other", "pid": 2, "ts": time.time(), "handlers": [], "channels_total": 900,
        "channels": {
            payments.name: {"recovered": 5, "unrecovered": 3, "recoveries": 2, "recovery_seconds": 0.25},
            '<img src=x onerror="alert(1)">': {"history_lost": 1},
        },
    }  # fmt: skip
    sync_redis.hset("eventbus:{heartbeat}:processes", "other:2", json.dumps(forged))
    sync_redis.set("eventbus:{heartbeat}:alive:other:2", 1, ex=120)
    with (
        runner(redis_server.url, subprocess_env, "sample_apps.dashboard_recovery"),
        dashboard(redis_server.url, subprocess_env) as address,
    ):
        # A message that never arrived: the next one's offset says so, and the runner reads it back.
        asyncio.run(_publish(redis_server.url, payments, b"1"))
        assert append_unpublished(sync_redis, payments.name, b"2") == 2
        asyncio.run(_publish(redis_server.url, payments, b"3"))
        deadline = time.monotonic() + 30
        while "recovered 1," not in (live := json.loads(get(address, "live")[2]))["channels"]:
            assert time.monotonic() < deadline, live["channels"]
            time.sleep(0.2)
        assert sync_redis.get(dashboard_recovery.SETTLED) == b"3"
        channels = live["channels"]
        row = re.search(rf"<tr><td>{re.escape(payments.name)}</td>.*?</tr>", channels)
        assert row, channels
        cells = re.findall(r"<td>(.*?)</td>", row.group(0).split("<details")[0])
        # status, recovered, not recovered, history lost, foreign, resumed, unclean resumes, recoveries, time
        assert cells[1] == '<strong class="bad">WARNING: messages lost</strong>'
        assert cells[2:5] == ["6", '<strong class="bad">3</strong>', "0"] and cells[8] == "3"
        assert "2 processes" in row.group(0) and "other:2: recovered 5, not recovered 3" in row.group(0)
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in channels and "<img" not in channels
        assert "WARNING: history lost" in channels
        assert "other:2 has 900 recoverable channels: its heartbeat carries the first 2 by name" in channels
        assert "recovers and resumes" in live["handlers"]
        page = get(address)[2]
        assert "<h2>Recoverable channels</h2>" in page and "other:2: recovered 5" in page and "<img" not in page
