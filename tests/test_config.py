"""Where Redis is, and URLs made safe to log."""

from __future__ import annotations

import pytest

from eventbus import ConfigError
from eventbus.config import DEFAULT_URL, redact_url, resolve_url


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    monkeypatch.delenv("EVENTBUS_DEFAULT_URL", raising=False)


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
    ],
)
def test_a_malformed_url_names_the_bad_part_and_never_the_password(url: str, named: str) -> None:
    """redis-py would read most of these as localhost:6379 db 0: a typo must not connect elsewhere."""
    with pytest.raises(ConfigError) as caught:
        resolve_url(url)
    message = str(caught.value)
    assert named in message and "\n" not in message
    assert "s3cret" not in message


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
