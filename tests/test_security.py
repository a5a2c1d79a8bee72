"""TLS (rediss://) with certificates made here, credentials in the URL, channel ACLs, and logs that
leak no password and no payload.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import eventbus
from eventbus import ConfigError, ConnectError, Context, Message, Runner, SubscribeError, on, on_pattern
from tests.conftest import ROOT
from tests.fault.helpers import FAST, eventually, publish_all, running, wait_reconnected
from tests.redis_server import RedisServer, free_port

PASSWORD = "s3cr3t:p@ss/w0rd"  # characters that must be percent-encoded in a URL
QUOTED = "s3cr3t%3Ap%40ss%2Fw0rd"
SECRET_PAYLOAD = b"card=4111111111111111"


# -- TLS ---------------------------------------------------------------------------------------


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(directory: Path) -> None:
    """A throwaway CA, a server certificate for 127.0.0.1, and a client certificate.

    With the extensions a CA and its certificates must have: Python 3.13's default context
    verifies strictly (VERIFY_X509_STRICT) and refuses a CA without key usage.
    """
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=eventbus-test-ca",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout", "ca.key", "-out", "ca.crt", cwd=directory)  # fmt: skip
    (directory / "san.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                "-out", f"{name}.csr", cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt", cwd=directory)  # fmt: skip


def redis_has_tls() -> bool:
    binary = shutil.which("redis-server")
    if binary is None:
        return False
    # Without certificates a TLS build exits at once ("No tls-cert-file configured"); a build
    # without TLS refuses the option itself ("Bad directive or wrong number of arguments").
    probe = subprocess.run(
        [binary, "--port", "0", "--tls-port", str(free_port()), "--logfile", ""],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "Bad directive" not in probe.stdout + probe.stderr


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, int, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make test certificates")
    if not redis_has_tls():
        pytest.skip("this redis-server was built without TLS support (BUILD_TLS=no)")
    make_certs(tmp_path)
    tls_port = free_port()
    # The plain port stays on for the fixture's readiness check and admin; eventbus uses only TLS.
    server = RedisServer(
        extra_args=[
            "--tls-port",
            str(tls_port),
            "--tls-cert-file",
            str(tmp_path / "server.crt"),
            "--tls-key-file",
            str(tmp_path / "server.key"),
            "--tls-ca-cert-file",
            str(tmp_path / "ca.crt"),
        ]
    ).start()
    yield server, tls_port, tmp_path
    server.stop()


@pytest.mark.both_loops  # uvloop has its own TLS implementation
async def test_rediss_with_mutual_tls(tls_server: tuple[RedisServer, int, Path]) -> None:
    server, tls_port, certs = tls_server
    url = (
        f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs / 'ca.crt'}"
        f"&ssl_certfile={certs / 'client.crt'}&ssl_keyfile={certs / 'client.key'}"
    )
    seen: list[bytes] = []

    @on("secure", name="secure")
    async def secure(msg: Message, ctx: Context) -> None:
        await ctx.redis.rpush("secured", msg.data)  # the command client speaks TLS too
        seen.append(msg.data)

    async with running([secure], url) as runner:
        await publish_all(runner, "secure", [b"a", b"b"])
        await eventually(lambda: seen == [b"a", b"b"], what="messages over TLS")
        with server.client() as admin:
            assert admin.lrange("secured", 0, -1) == [b"a", b"b"]
            # The subscription connection is the TLS port's: plain-port clients are the admin only.
            subscribers = [c for c in admin.client_list() if c["name"].startswith("eventbus-sub")]
            assert len(subscribers) == 1
            admin.client_kill_filter(_type="pubsub")
        await wait_reconnected(runner)  # reconnecting redoes the TLS handshake
        await publish_all(runner, "secure", [b"c"])
        await eventually(lambda: seen == [b"a", b"b", b"c"], what="a message after reconnecting over TLS")


@pytest.mark.both_loops
async def test_rediss_refuses_an_unknown_ca(tls_server: tuple[RedisServer, int, Path], tmp_path: Path) -> None:
    _, tls_port, certs = tls_server
    other = tmp_path / "other"
    other.mkdir()
    make_certs(other)
    url = (
        f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={other / 'ca.crt'}"
        f"&ssl_certfile={certs / 'client.crt'}&ssl_keyfile={certs / 'client.key'}"
    )

    @on("x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    # A certificate problem is configuration, not an outage: it fails at once, without retrying for
    # the whole connect timeout, and says what went wrong and which option fixes it.
    with pytest.raises(ConnectError, match=r"TLS handshake .* failed: .*certificate verify failed") as caught:
        await Runner([handler], url=url, **{**FAST, "connect_timeout": 30.0}).start()
    assert f"the CA in ?ssl_ca_certs={other / 'ca.crt'} did not sign the server's certificate" in str(caught.value)
    no_ca = f"rediss://127.0.0.1:{tls_port}/0?ssl_certfile={certs / 'client.crt'}&ssl_keyfile={certs / 'client.key'}"
    with pytest.raises(ConnectError, match=r"certificate verify failed") as caught:
        await Runner([handler], url=no_ca, **{**FAST, "connect_timeout": 30.0}).start()
    assert "give the CA that signed the server's certificate with ?ssl_ca_certs=" in str(caught.value)
    assert "\n" not in str(caught.value)
    no_client_cert = f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={certs / 'ca.crt'}"
    with pytest.raises(ConnectError, match=r"(?i)TLS handshake .* failed: .*certificate required") as caught:
        await Runner([handler], url=no_client_cert, **{**FAST, "connect_timeout": 30.0}).start()
    assert "give ?ssl_certfile=...&ssl_keyfile=..." in str(caught.value)


@pytest.mark.both_loops
async def test_an_unverified_server_is_warned_about_once(
    tls_server: tuple[RedisServer, int, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, tls_port, certs = tls_server
    url = (
        f"rediss://127.0.0.1:{tls_port}/0?ssl_cert_reqs=none"
        f"&ssl_certfile={certs / 'client.crt'}&ssl_keyfile={certs / 'client.key'}"
    )
    caplog.set_level(logging.INFO, "eventbus")
    seen: list[bytes] = []

    @on("plain", name="plain")
    async def plain(msg: Message, ctx: Context) -> None:
        seen.append(msg.data)

    async with running([plain], url) as runner:
        with tls_server[0].client() as admin:
            admin.client_kill_filter(_type="pubsub")
        await wait_reconnected(runner)  # a new handshake, no new warning
        async with eventbus.connect(url) as publisher:  # nor for a publisher to the same server
            await publisher.publish("plain", b"a")
        await eventually(lambda: seen == [b"a"], what="a message over unverified TLS")
    warnings = [r.getMessage() for r in caplog.records if "does not verify the server" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "ssl_cert_reqs=none" in warnings[0] and "?ssl_ca_certs=" in warnings[0]


async def test_redis_url_on_a_tls_port_says_use_rediss(tls_server: tuple[RedisServer, int, Path]) -> None:
    _, tls_port, _ = tls_server

    @on("x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    started = time.monotonic()
    with pytest.raises(ConnectError, match=rf"speaks TLS on that port: use rediss://127\.0\.0\.1:{tls_port}/0"):
        await Runner([handler], url=f"redis://127.0.0.1:{tls_port}/0", **{**FAST, "connect_timeout": 30.0}).start()
    assert time.monotonic() - started < 10  # at once, not after the connect timeout


@pytest.mark.parametrize("option", ["ssl_ca_certs", "ssl_certfile", "ssl_keyfile"])
async def test_a_certificate_file_that_cannot_be_read_fails_at_once_naming_it(
    option: str, tls_server: tuple[RedisServer, int, Path]
) -> None:
    _, tls_port, certs = tls_server
    files = {
        "ssl_ca_certs": certs / "ca.crt",
        "ssl_certfile": certs / "client.crt",
        "ssl_keyfile": certs / "client.key",
    }

    @on("x")
    async def handler(msg: Message, ctx: Context) -> None: ...

    for bad, why in (("/nonexistent", "No such file or directory"), (str(certs), "Is a directory")):
        query = "&".join(f"{k}={bad if k == option else v}" for k, v in files.items())
        started = time.monotonic()
        with pytest.raises(ConfigError) as caught:
            await Runner(
                [handler], url=f"rediss://127.0.0.1:{tls_port}/0?{query}", **{**FAST, "connect_timeout": 30.0}
            ).start()
        assert str(caught.value) == f"?{option}={bad}: cannot read the file: {why}"
        assert time.monotonic() - started < 5
    with pytest.raises(ConfigError, match=r"\?ssl_ca_certs=/nonexistent: cannot read the file"):
        eventbus.connect(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs=/nonexistent")  # a publisher too


def test_cli_certificate_file_error_is_one_line_exit_2(subprocess_env: dict[str, str], tmp_path: Path) -> None:
    url = f"rediss://127.0.0.1:{free_port()}/0?ssl_ca_certs=/nonexistent/ca.crt"
    result = run_cli(["run", "tests.sample_apps.orders", "--url", url], subprocess_env, ROOT)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "eventbus: error: ?ssl_ca_certs=/nonexistent/ca.crt: cannot read the file: No such file or directory"
    ], result.stderr


# -- credentials and ACLs ----------------------------------------------------------------------


@pytest.fixture
def acl_server(own_redis_server: RedisServer) -> RedisServer:
    """alice may use every key and only the channels orders and news:* (the ACL's &-rules)."""
    with own_redis_server.client() as admin:
        admin.execute_command(
            "ACL", "SETUSER", "alice", "on", f">{PASSWORD}", "~*", "resetchannels", "&orders", "&news:*", "+@all"
        )
    return own_redis_server


def alice_url(server: RedisServer, password: str = QUOTED) -> str:
    return f"redis://alice:{password}@127.0.0.1:{server.port}/0"


async def test_username_and_password_from_the_url(acl_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "eventbus")
    seen: list[str] = []

    @on("orders", name="orders")
    async def orders(msg: Message, ctx: Context) -> None:
        seen.append(msg.text)

    @on_pattern("news:*", name="news")
    async def news(msg: Message, ctx: Context) -> None:
        seen.append(msg.channel)

    async with running([orders, news], alice_url(acl_server)) as runner:
        await publish_all(runner, "orders", ["o1"])
        await publish_all(runner, "news:today", ["n1"])
        await eventually(lambda: sorted(seen) == ["news:today", "o1"], what="messages as alice")
        with acl_server.client() as admin:
            users = {c["name"]: c["user"] for c in admin.client_list()}
            assert [u for n, u in users.items() if n.startswith("eventbus-sub")] == ["alice"]
    assert PASSWORD not in caplog.text and QUOTED not in caplog.text
    assert "alice:***@" in caplog.text


async def test_a_forbidden_channel_is_a_startup_error_naming_it(acl_server: RedisServer) -> None:
    @on("orders", name="orders")
    async def orders(msg: Message, ctx: Context) -> None: ...

    @on("payroll", name="payroll")
    async def payroll(msg: Message, ctx: Context) -> None: ...

    @on_pattern("news:*", name="news")
    async def news(msg: Message, ctx: Context) -> None: ...

    runner = Runner([orders, payroll, news], url=alice_url(acl_server), **FAST)
    with pytest.raises(SubscribeError, match="'payroll'") as error:
        await runner.start()
    assert "orders" not in str(error.value).split("refused", 1)[1].split(":")[0]  # only the culprit is named

    @on_pattern("*", name="everything")
    async def everything(msg: Message, ctx: Context) -> None: ...

    with pytest.raises(SubscribeError, match=r"PSUBSCRIBE to '\*'"):
        await Runner([orders, everything], url=alice_url(acl_server), **FAST).start()
    with acl_server.client() as admin:  # nothing left behind: no subscription connection, no retry loop
        await eventually(
            lambda: not [c for c in admin.client_list() if c["name"].startswith("eventbus-sub")],
            what="the subscription connections closed",
        )


APP = """
from eventbus import on

@on("orders")
async def orders(msg, ctx): ...

@on("payroll")
async def payroll(msg, ctx): ...
"""


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args], capture_output=True, text=True, timeout=60, env=env, cwd=cwd
    )


def test_cli_forbidden_channel_exits_1_with_one_line(
    acl_server: RedisServer, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "acl_app.py").write_text(textwrap.dedent(APP))
    env = {**subprocess_env, "PYTHONPATH": f"{tmp_path}:{ROOT}"}
    result = run_cli(["run", "acl_app", "--url", alice_url(acl_server), "--no-embedded"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("eventbus: error:")]
    assert len(errors) == 1 and "'payroll'" in errors[0] and "NOPERM" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert PASSWORD not in result.stderr + result.stdout and QUOTED not in result.stderr + result.stdout

    wrong = run_cli(["run", "acl_app", "--url", alice_url(acl_server, "wrong-pw"), "--no-embedded"], env, tmp_path)
    assert wrong.returncode == 1
    assert "refused the password of user 'alice'" in wrong.stderr and "wrong-pw" not in wrong.stderr
    assert "Traceback" not in wrong.stderr


# -- nothing secret in the logs on the failure paths -------------------------------------------


async def test_failure_paths_log_no_password_and_no_payload(
    acl_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # everything, redis-py's loggers included

    @on("orders", name="failing", retries=1, backoff=0)
    async def failing(msg: Message, ctx: Context) -> None:
        raise RuntimeError("upstream said no")

    @on("orders", name="decoding")
    async def decoding(msg: Message, ctx: Context) -> None:
        msg.json()

    @on("orders", name="blocked", inbox_size=1)
    async def blocked(msg: Message, ctx: Context) -> None:
        await asyncio.Event().wait()

    async with running([failing, decoding, blocked], alice_url(acl_server), max_payload=64, grace=0.2) as runner:
        await publish_all(runner, "orders", [SECRET_PAYLOAD] * 3 + [SECRET_PAYLOAD * 10])
        await eventually(lambda: runner.stats.handlers["failing"].dead_lettered == 4, what="dead letters")
        # The server restarts without alice: reconnecting is refused until she is back.
        acl_server.kill()
        acl_server.start()
        await eventually(
            lambda: "WRONGPASS" in caplog.text or "reconnect attempt" in caplog.text, what="a refused reconnect"
        )
        with acl_server.client() as admin:
            admin.execute_command(
                "ACL", "SETUSER", "alice", "on", f">{PASSWORD}", "~*", "resetchannels", "&orders", "+@all"
            )
        await wait_reconnected(runner)
    text = caplog.text
    assert "WRONGPASS" in text or "reconnect attempt" in text  # the refused reconnects were logged...
    for secret in (PASSWORD, QUOTED, SECRET_PAYLOAD.decode(), "4111111111111111"):
        assert secret not in text  # ...without the password, and no payload anywhere
