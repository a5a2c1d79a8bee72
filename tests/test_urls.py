"""Where Redis is, URLs made safe to log, and whether ctx.redis auto-pipelines."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eventbus import ConfigError
from eventbus._backends import resolve_url, validate_url  # checked against each scheme's own grammar too
from eventbus._urls import DEFAULT_URL, ResolvedURL, autopipeline_enabled, read_url_file, redact_url


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    monkeypatch.delenv("EVENTBUS_DEFAULT_URL", raising=False)
    monkeypatch.delenv("EVENTBUS_URL_FILE", raising=False)
    monkeypatch.delenv("EVENTBUS_AUTOPIPELINE", raising=False)


def test_argument_beats_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_URL", "redis://env:6379/1")
    resolved = resolve_url("redis://arg:6379/2")
    assert (resolved.url, resolved.explicit, resolved.source) == ("redis://arg:6379/2", True, "--url")


def test_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_URL", "redis://env:6379/1")
    resolved = resolve_url(None)
    assert (resolved.url, resolved.explicit, resolved.source) == ("redis://env:6379/1", True, "$EVENTBUS_URL")


def test_default_is_not_explicit_so_it_may_fall_back_to_embedded(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_url(None).url == DEFAULT_URL and not resolve_url(None).explicit
    monkeypatch.setenv("EVENTBUS_DEFAULT_URL", "redis://127.0.0.1:7777/0")
    assert resolve_url(None).url == "redis://127.0.0.1:7777/0" and not resolve_url(None).explicit


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "localhost:6379", "redis://localhost:notaport/0"],
)
def test_invalid_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError, match="invalid Redis URL"):
        resolve_url(url)


def test_invalid_url_error_hides_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_url("http://user:s3cret@localhost:6379")
    assert "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://alice:s3cret@host:6379/0", "redis://alice:***@host:6379/0"),
        ("rediss://alice:s3cret@host/0", "rediss://alice:***@host/0"),
        ("redis://host:6379/0?password=s3cret", "redis://host:6379/0?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    ("url", "named"),
    [
        ("redis:/otherhost:7000/3", "two slashes"),
        ("redis://localhost:abc/0", "invalid port 'abc'"),
        ("redis://localhost:0/0", "invalid port '0'"),
        ("redis://:s3cret@localhost:abc/0", "invalid port 'abc'"),
        ("http://localhost:6379", "unsupported scheme 'http'"),
        ("localhost:6379", "no scheme"),
        ("redis://localhost/abc", "invalid database number 'abc'"),
        ("redis://localhost/0?db=x", "'db'"),
        ("redis:///0", "no host"),
        ("unix://tmp/redis.sock", "unix:///tmp/redis.sock"),
        ("redis://u:s3cret@[::1/0", "unbalanced brackets in the host '[::1'"),
        ("redis://u:s3cret@::1]:6379/0", "unbalanced brackets in the host '::1]:6379'"),
        ("redis://u:s3cret@[zz]:6379/0", "invalid host '[zz]:6379'"),
        ("redis+cluster://u:s3cret@[::1:7000,h:7001", "unbalanced brackets"),
        ("redis://u:s3cret@h:6379/0?option=1", "unknown option 'option' in the query string; expected one of db,"),
        ("redis://h:6379/0?pasword=s3cret", "unknown option 'pasword' in the query string; did you mean 'password'?"),
        ("rediss://h:6379/0?ssl_ca_cert=/ca.pem", "did you mean 'ssl_ca_certs'?"),
        ("redis://h:6379/0?ssl_ca_certs=/ca.pem", "option 'ssl_ca_certs' needs a TLS URL (rediss://)"),
        ("unix:///tmp/r.sock?nope=1", "unknown option 'nope'"),
        ("redis+cluster://h:7000,h:7001?socket_timout=1", "did you mean 'socket_timeout'?"),
        ("s3cret", "no scheme"),
    ],
)
def test_a_malformed_url_names_the_bad_part_and_never_the_password(url: str, named: str) -> None:
    """redis-py would read most of these as localhost:6379 db 0: a typo must not connect elsewhere."""
    with pytest.raises(ConfigError) as caught:
        resolve_url(url)
    message = str(caught.value)
    assert named in message and "\n" not in message
    assert "s3cret" not in message  # a password, or the value of a misspelt option that holds one


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost",
        "redis://localhost:6379/15",
        "rediss://u:p@h:6380/0?ssl_cert_reqs=none",
        "unix:///tmp/r.sock",
    ],
)
def test_well_formed_urls_pass(url: str) -> None:
    assert resolve_url(url).url == url


def test_the_source_is_named_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_url("redis://h/0", "code").source == "code"
    monkeypatch.setenv("EVENTBUS_DEFAULT_URL", "redis://127.0.0.1:7777/0")
    assert resolve_url(None).source == "$EVENTBUS_DEFAULT_URL"


def test_a_malformed_environment_url_says_where_it_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_URL", "redis://localhost:abc")
    with pytest.raises(ConfigError, match=r"from \$EVENTBUS_URL"):
        resolve_url(None)


# -- every URL mistake is one line: brackets, options, anything urlsplit refuses -------------------


def test_the_documented_options_are_accepted() -> None:
    url = "rediss://u:p@h:6380/1?socket_timeout=2&ssl_ca_certs=/ca.pem&ssl_cert_reqs=required&client_name=x"
    assert resolve_url(url).url == url


URL_PIECES = st.sampled_from([*"[]:@/?=&%#,.; ab1\t\n\x00\u2028é", "::1", "[::1]", "u:p@", "?db=", "ssl_", "h:6379"])


@settings(max_examples=500, deadline=None)
@given(st.lists(URL_PIECES, max_size=15).map("".join))
def test_whatever_follows_the_scheme_is_a_url_or_a_one_line_config_error(rest: str) -> None:
    for scheme in ("redis://", "rediss://", "unix://", "redis+cluster://", "redis+sentinel://"):
        try:
            validate_url(scheme + rest)
        except ConfigError as exc:
            assert len(str(exc).splitlines()) == 1, str(exc)


def test_a_line_break_in_a_url_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_URL", "redis://u:s3cret@h:6379/0\n")
    with pytest.raises(ConfigError) as caught:
        resolve_url(None)
    assert str(caught.value) == (
        "invalid Redis URL (from $EVENTBUS_URL): an unprintable character ('\\n') at position 26 (a trailing newline?)"
    )


# -- the URL from a file (a mounted secret) -----------------------------------------------------


def test_a_url_file_is_read_without_its_trailing_newline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "redis-url"
    secret.write_text("redis://u:s3cret@h:6379/2\n")
    monkeypatch.setenv("EVENTBUS_URL_FILE", str(secret))
    resolved = resolve_url(None)
    assert resolved == ResolvedURL("redis://u:s3cret@h:6379/2", True, f"$EVENTBUS_URL_FILE {secret}")
    assert resolve_url("redis://arg/0").url == "redis://arg/0"  # the command line beats the environment


def test_url_and_url_file_in_the_environment_at_once_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "url").write_text("redis://h/0")
    monkeypatch.setenv("EVENTBUS_URL", "redis://h/1")
    monkeypatch.setenv("EVENTBUS_URL_FILE", str(tmp_path / "url"))
    with pytest.raises(ConfigError, match=r"both \$EVENTBUS_URL and \$EVENTBUS_URL_FILE are set"):
        resolve_url(None)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "cannot read the Redis URL from --url-file {path}: No such file or directory"),
        ("dir", "cannot read the Redis URL from --url-file {path}: Is a directory"),
        ("", "--url-file {path} is empty"),
        ("\n  \n", "--url-file {path} is empty"),
        ("redis://u:s3cret@h/0\nredis://other/0\n", "--url-file {path} holds more than a URL"),
        (b"\xffs3cret", "cannot read the Redis URL from --url-file {path}: not UTF-8 text"),
        ("s3cret\n", "invalid Redis URL (from --url-file {path}): no scheme"),
        ("redis://u:s3cret@h:port/0", "invalid Redis URL (from --url-file {path}): invalid port"),
    ],
)
def test_a_url_file_that_cannot_be_used_is_one_line_naming_the_file_never_its_content(
    tmp_path: Path, content: str | bytes | None, error: str
) -> None:
    path = tmp_path / "redis-url"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    where = f"--url-file {path}"
    with pytest.raises(ConfigError) as caught:
        resolve_url(read_url_file(str(path), where), where)
    message = str(caught.value)
    assert message.startswith(error.format(path=path)) and "\n" not in message, message
    assert "s3cret" not in message and "redis://u" not in message


def test_an_unreadable_url_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "redis-url"
    path.write_text("redis://u:s3cret@h/0\n")
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("running as root: every file is readable")
    with pytest.raises(ConfigError, match=rf"^cannot read the Redis URL from --url-file {path}: Permission denied$"):
        read_url_file(str(path), f"--url-file {path}")


@pytest.mark.parametrize(
    ("value", "enabled"),
    [
        *[(None, True), ("", True), ("1", True), ("on", True), ("TRUE", True)],
        *[("0", False), (" off ", False), ("no", False)],
    ],
)
def test_autopipelining_is_on_unless_the_environment_turns_it_off(
    value: str | None, enabled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if value is not None:
        monkeypatch.setenv("EVENTBUS_AUTOPIPELINE", value)
    assert autopipeline_enabled() is enabled
    # A choice made in code or on the command line wins over the environment.
    assert autopipeline_enabled(False) is False and autopipeline_enabled(True) is True


def test_an_invalid_eventbus_autopipeline_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVENTBUS_AUTOPIPELINE", "maybe")
    with pytest.raises(ConfigError, match=r"\$EVENTBUS_AUTOPIPELINE must be 1 or 0 \(on or off\), not 'maybe'"):
        autopipeline_enabled()
