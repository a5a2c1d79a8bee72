"""The ACL table of docs/security.md, row by row: a real Redis user with exactly that rule runs the role's real
work, which succeeds, and attempts nothing the rule denies (the server's ACL LOG stays empty).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

import eventbus
from eventbus import Channel, Context, Message, Reject, on, on_pattern, on_stream
from eventbus._settings import DEFAULT_DEAD_LETTER_STREAM as DEFAULT_STREAM
from tests.conftest import ROOT
from tests.fault.helpers import eventually, running, wait_reconnected
from tests.redis_server import RedisServer

PASSWORD = "pw-least"


def documented_rules() -> dict[str, str]:
    """Role -> ACL rule, as the table under "Least privilege" in docs/security.md gives them."""
    text = (ROOT / "docs" / "security.md").read_text()
    section = text.split("## Least privilege", 1)[1].split("\n#", 1)[0]
    rules: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        if len(cells) == 3 and cells[1].startswith("`-@all"):
            rules[cells[0].strip("`")] = cells[1].strip("`").replace("\\|", "|")
    return rules


RULES = documented_rules()


def test_the_table_has_every_role() -> None:
    assert set(RULES) == {
        "runner",
        "publisher",
        "requester",
        "stream appender",
        "stream worker",
        "check",
        "check --module",
        "lag figures",
        "dashboard",
    }


class Acl:
    """The server's admin view: users made from the table, and the ACL LOG."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server

    def user(self, role: str, *more: str) -> str:
        """A user with exactly the documented rule of ``role`` (and the documented additions
        ``more``); returns its URL."""
        name = role.replace(" ", "-")
        with self.server.client() as admin:
            rule = [*RULES[role].split(), *more]
            admin.execute_command("ACL", "SETUSER", name, "reset", "on", f">{PASSWORD}", *rule)
            admin.execute_command("ACL", "LOG", "RESET")
        return f"redis://{name}:{PASSWORD}@127.0.0.1:{self.server.port}/0"

    def denied(self) -> list[str]:
        """What was attempted and denied since the user was made (reason, command or key, user)."""
        with self.server.client() as admin:
            entries = admin.acl_log()
        return [f"{e['reason']} {e['object']} {e['username']}" for e in entries]


@pytest.fixture
def acl(own_redis_server: RedisServer) -> Acl:
    return Acl(own_redis_server)


Cli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def cli(subprocess_env: dict[str, str], tmp_path: Path) -> Cli:
    """``python -m eventbus ARGS`` in ``tmp_path`` (where a test writes its module), as a user runs it."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "eventbus", *args],
            capture_output=True,
            text=True,
            timeout=60,
            env=subprocess_env,
            cwd=tmp_path,
        )

    return run


async def test_runner(acl: Acl) -> None:
    url = acl.user("runner")
    seen: list[str] = []

    @on("orders", name="store")
    async def store(msg: Message, ctx: Context) -> None:
        if msg.data == b"bad":
            raise Reject("not an order")
        await ctx.publish("orders:stored", msg.data)

    @on_pattern("orders:*", name="audit")
    async def audit(msg: Message, ctx: Context) -> None:
        seen.append(f"{msg.channel}={msg.text}")

    async with running([store, audit], url, stats_interval=0.05) as runner:
        with acl.server.client() as admin:
            admin.publish("orders", "1")
            admin.publish("orders", "bad")
            await eventually(lambda: runner.stats.handlers["store"].dead_lettered == 1, what="the dead letter")
            # A reconnect authenticates and names the connection again.
            admin.client_kill_filter(_type="pubsub")
            await wait_reconnected(runner)
            admin.publish("orders", "2")
            await eventually(lambda: seen == ["orders:stored=1", "orders:stored=2"], what="the published results")
            assert admin.xlen(DEFAULT_STREAM) == 1
            assert [c["user"] for c in admin.client_list() if c["name"].startswith("eventbus-sub")] == ["runner"]
    assert acl.denied() == []


# docs/security.md, "Recoverable channels": what the publisher and the runner add to their rules.
HISTORY_PUBLISHER = [
    *("+evalsha", "+script|load", "+xadd", "+set", "+get", "+xrevrange", "+del", "+time", "+pexpire"),
    *("+xdel", "+xlen", "+rename", "~eventbus:history:*", "~eventbus:history-top:*", "~eventbus:history-prev:*"),
]
HISTORY_RUNNER = [
    *("+evalsha_ro", "+script|load", "+xrange", "+xrevrange", "%R~eventbus:history:*", "%R~eventbus:history-prev:*")
]
RESUMING_RUNNER = ["+evalsha", "+hget", "+hset", "+pexpire", "~eventbus:history-pos:*"]


async def test_recoverable_channels_recover_and_resume_with_the_documented_rules(acl: Acl) -> None:
    """A gap and a restart of a runner with a resumed handler and a pattern, with the publisher's
    and the runner's documented rules and their additions for recoverable channels: nothing denied."""
    orders = Channel("orders", history=100)
    billed: list[int] = []
    audited: list[int] = []

    @on(orders, name="bill", resume=True)
    async def bill(msg: Message, ctx: Context) -> None:
        billed.append(int(msg.text))

    @on_pattern("orders:*", name="audit")
    async def audit(msg: Message, ctx: Context) -> None:
        audited.append(int(msg.text))

    runner_url = acl.user("runner", *HISTORY_RUNNER, *RESUMING_RUNNER)
    publisher_url = acl.user("publisher", *HISTORY_PUBLISHER)
    audited_channel = Channel("orders:eu", history=100)
    async with eventbus.connect(publisher_url) as bus:
        async with running([bill, audit], runner_url) as runner:
            await bus.publish(orders, 1)
            await bus.publish(audited_channel, 1)
            await eventually(lambda: billed == [1] and audited == [1], what="the first messages")
            with acl.server.client() as admin:
                admin.client_kill_filter(_type="pubsub")
                await wait_reconnected(runner)
            await bus.publish(orders, 2)
            await eventually(lambda: billed == [1, 2], what="after the reconnect")
        await bus.publish(orders, 3)  # while the runner is down
        async with running([bill, audit], runner_url):
            await eventually(lambda: billed == [1, 2, 3], what="what was published while it was down")
    assert acl.denied() == []


async def test_requester_and_a_runner_that_answers(acl: Acl) -> None:
    @on("orders", name="confirm")
    async def confirm(msg: Message, ctx: Context) -> str:
        return f"confirmed {msg.text}"

    async with (
        running([confirm], acl.user("runner", "&eventbus:reply:*")),
        eventbus.connect(acl.user("requester")) as bus,
    ):
        assert (await bus.request("orders", "7", timeout=30)).text == "confirmed 7"
    assert acl.denied() == []


async def test_runner_with_sharded_channels(acl: Acl) -> None:
    url = acl.user("runner", "+cluster|slots")  # docs/security.md's addition for sharded handlers
    seen: list[bytes] = []

    @on("orders", sharded=True, name="store")
    async def store(msg: Message, ctx: Context) -> None:
        seen.append(msg.data)

    async with running([store], url):
        with acl.server.client() as admin:
            admin.execute_command("SPUBLISH", "orders", "1")
            await eventually(lambda: seen == [b"1"], what="the sharded message")
    assert acl.denied() == []


async def test_publisher_and_stream_appender(acl: Acl, cli: Cli) -> None:
    url = acl.user("publisher")
    with acl.server.client() as admin:
        listener = admin.pubsub()
        listener.subscribe("orders")
        result = cli("publish", "orders", "1", "--url", url)
        assert result.returncode == 0, result.stderr
        async with eventbus.connect(url) as bus:
            await bus.publish("orders", "2")
        received = [listener.get_message(timeout=5) for _ in range(3)]
        listener.close()
    assert [m["data"] for m in received if m and m["type"] == "message"] == [b"1", b"2"]
    assert acl.denied() == []

    url = acl.user("stream appender")
    result = cli("publish", "--stream", "orders", "1", "--url", url)
    assert result.returncode == 0, result.stderr
    async with eventbus.connect(url) as bus:
        await bus.append("orders", "2")
    with acl.server.client() as admin:
        assert [fields[b"data"] for _, fields in admin.xrange("orders")] == [b"1", b"2"]
    assert acl.denied() == []


async def test_stream_worker(acl: Acl, caplog: pytest.LogCaptureFixture) -> None:
    url = acl.user("stream worker")
    billed: list[bytes] = []

    @on_stream("orders", group="billing", block=0.1, claim_idle=0.2, name="bill")
    async def bill(msg: Message, ctx: Context) -> None:
        if msg.data == b"bad":
            raise Reject("not an order")
        billed.append(msg.data)

    caplog.set_level(logging.INFO, "eventbus")
    async with running([bill], url, stats_interval=0.1) as runner:
        with acl.server.client() as admin:
            admin.xadd("orders", {"data": "1"})
            admin.xadd("orders", {"data": "bad"})
            await eventually(lambda: runner.stats.handlers["bill"].dead_lettered == 1, what="the dead letter")
            await eventually(lambda: billed == [b"1"], what="the entry handled")
            # The lag figures of the stats line, and a round of reclaiming (XAUTOCLAIM, every 0.1 s).
            await eventually(lambda: "streams: orders/billing lag=0 pending=0" in caplog.text, what="the lag figures")
            await eventually(lambda: "cmdstat_xautoclaim" in admin.info("commandstats"), what="an XAUTOCLAIM")
    with acl.server.client() as admin:
        assert admin.xpending("orders", "billing")["pending"] == 0  # acknowledged, the rejected one too
        assert admin.xinfo_consumers("orders", "billing") == []  # left the group: nothing was pending
        assert admin.xlen(DEFAULT_STREAM) == 1
    assert acl.denied() == []


MODULE = """
from eventbus import on, on_pattern, on_stream

@on("orders")
async def store(msg, ctx): ...

@on_pattern("orders:*")
async def audit(msg, ctx): ...

@on_stream("orders", group="billing")
async def bill(msg, ctx): ...
"""


def test_check_and_the_lag_figures(acl: Acl, cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text(textwrap.dedent(MODULE))
    with acl.server.client() as admin:
        admin.xgroup_create("orders", "billing", id="0", mkstream=True)
        admin.xadd("orders", {"data": "1"})

    url = acl.user("check")
    result = cli("check", "--url", url)
    assert result.returncode == 0 and "answered PING" in result.stdout, result.stderr
    assert acl.denied() == []

    url = acl.user("check --module")
    result = cli("check", "--module", "shop", "--url", url)
    assert result.returncode == 0, result.stderr
    assert "1 channel(s) and 1 pattern(s) subscribable, 1 stream(s) usable" in result.stdout
    assert acl.denied() == []

    url = acl.user("lag figures")
    result = cli("streams", "shop", "--json", "--url", url)
    assert result.returncode == 0, result.stderr
    assert '"lag": 1' in result.stdout
    assert acl.denied() == []


def test_dashboard(acl: Acl, subprocess_env: dict[str, str]) -> None:
    from tests.dashboard_process import dashboard, needs_extra, request, runner

    if needs_extra.args[0]:
        pytest.skip(needs_extra.kwargs["reason"])
    with acl.server.client() as admin:
        admin.set("dashboard-demo:broken", 1)
    with runner(acl.server.url, subprocess_env, "sample_apps.dashboard_demo"), acl.server.client() as admin:
        admin.publish("dashboard-demo:orders", "1")
        deadline = time.monotonic() + 30
        while not admin.xlen(DEFAULT_STREAM):
            assert time.monotonic() < deadline, "no dead letter written"
            time.sleep(0.05)
        admin.delete("dashboard-demo:broken")
    url = acl.user("dashboard", "~dashboard-demo:*", "&dashboard-demo:*")  # the handlers' keys and channels
    with acl.server.client() as admin:
        admin.execute_command("ACL", "LOG", "RESET")
    with dashboard(url, subprocess_env, "--module", "sample_apps.dashboard_demo") as address:
        status, _, page = request(address)
        assert status == 200 and "record_order" in page and "stopped" in page
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert csrf is not None
        form = f"csrf={csrf.group(1)}&scope=matching".encode()
        status, headers, _ = request(address, "dead-letters/replay", data=form)
        assert status == 303 and "1+replayed" in headers["location"], headers
    assert acl.denied() == []
