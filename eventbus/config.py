"""Where Redis is: URL resolution, and URLs made safe to log."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from eventbus.errors import ConfigError

ENV_URL = "EVENTBUS_URL"
# Where to look when nothing is configured, before falling back to an embedded Redis. The
# override exists for machines (and tests) where something else owns localhost:6379.
ENV_DEFAULT_URL = "EVENTBUS_DEFAULT_URL"
DEFAULT_URL = "redis://localhost:6379/0"
SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")


@dataclass(frozen=True, slots=True)
class ResolvedURL:
    url: str
    explicit: bool  # given by --url / EVENTBUS_URL; the default may fall back to an embedded Redis
    source: str  # "--url", "EVENTBUS_URL" or "default"


def resolve_url(url: str | None) -> ResolvedURL:
    """The URL to use: the argument, else $EVENTBUS_URL, else the local default."""
    if url:
        return ResolvedURL(_validated(url), True, "--url")
    env = os.environ.get(ENV_URL)
    if env:
        return ResolvedURL(_validated(env), True, ENV_URL)
    return ResolvedURL(default_url(), False, "default")


def default_url() -> str:
    return _validated(os.environ.get(ENV_DEFAULT_URL) or DEFAULT_URL)


def _validated(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ConfigError(
            f"unsupported Redis URL scheme {parts.scheme!r} in {redact_url(url)}: use redis://, rediss://, unix:// "
            "or redis+cluster://host:port,host:port"
        )
    if parts.scheme.endswith("+cluster"):
        from eventbus.cluster import parse_cluster_url

        parse_cluster_url(url)  # raises ConfigError on a malformed seed list
        return url
    try:
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise ConfigError(f"invalid port in Redis URL {redact_url(url)}") from None
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages.

    redis-py also reads ``?password=`` from the query string, so secrets there are masked too.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "<invalid URL>"
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"  # IPv6 literal
        if port is not None:
            host = f"{host}:{port}"
        netloc = f"{user}:***@{host}"
    if query:
        query = "&".join(
            f"{item.split('=', 1)[0]}=***" if _is_secret(unquote(item.split("=", 1)[0]).lower()) else item
            for item in query.split("&")
        )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _is_secret(key: str) -> bool:
    return "password" in key or "token" in key or "secret" in key
