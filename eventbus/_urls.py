"""Where Redis is: URL resolution, the parts of URL validation every scheme shares, and URLs made
safe to log; whether ctx.redis auto-pipelines.

Which schemes exist, and each one's own grammar (a server's host, port and database; a
cluster's seeds; a sentinel URL's service), belong to the backends: the one scheme table in
:mod:`eventbus._backends` names them. :func:`resolve_url` and :func:`validate_url` take them as
``grammars`` (scheme -> grammar), and ``eventbus._backends.resolve_url`` / ``validate_url`` pass the
table's.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit, urlunsplit

from eventbus._errors import ConfigError

ENV_URL = "EVENTBUS_URL"
# A file holding the URL, as container secrets are mounted: the password stays out of argv and env.
ENV_URL_FILE = "EVENTBUS_URL_FILE"
# Where to look when nothing is configured, before falling back to an embedded Redis. The
# override exists for machines (and tests) where something else owns localhost:6379.
ENV_DEFAULT_URL = "EVENTBUS_DEFAULT_URL"
DEFAULT_URL = "redis://localhost:6379/0"


# Where a URL came from, as the log names it.
SOURCE_OPTION = "--url"
SOURCE_ENV = f"${ENV_URL}"
SOURCE_FILE_OPTION = "--url-file"  # named with the file's path: "--url-file /run/secrets/redis"
SOURCE_ENV_FILE = f"${ENV_URL_FILE}"
SOURCE_CODE = "code"
SOURCE_DEFAULT = "default"
SOURCE_EMBEDDED = "embedded"
# 0 makes ctx.redis a plain redis.asyncio client wherever code or the CLI does not choose.
ENV_AUTOPIPELINE = "EVENTBUS_AUTOPIPELINE"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


# A scheme's own grammar: (url, where, reveal) -> None, or a ConfigError naming the bad part
# (``where`` names the URL's source; ``reveal=False`` keeps even the masked URL out of the message).
Grammar = Callable[[str, str, bool], None]
Grammars = Mapping[str, Grammar]  # every scheme there is, and its grammar


@dataclass(frozen=True, slots=True)
class ResolvedURL:
    url: str
    explicit: bool  # given by --url / EVENTBUS_URL / code; the default may fall back to an embedded Redis
    # "--url", "--url-file PATH", "$EVENTBUS_URL", "$EVENTBUS_URL_FILE PATH", "code", "default"
    # (or "$EVENTBUS_DEFAULT_URL")
    source: str


def resolve_url(url: str | None, source: str, *, grammars: Grammars) -> ResolvedURL:
    """The URL to use: the argument (from ``source``), else $EVENTBUS_URL or the file that
    $EVENTBUS_URL_FILE names (not both), else the local default; checked against ``grammars``."""
    if url:
        return ResolvedURL(validate_url(url, source, reveal=not from_file(source), grammars=grammars), True, source)
    env, env_file = os.environ.get(ENV_URL), os.environ.get(ENV_URL_FILE)
    if env and env_file:
        raise ConfigError(f"both ${ENV_URL} and ${ENV_URL_FILE} are set: set one (they are two ways to give one URL)")
    if env:
        return ResolvedURL(validate_url(env, SOURCE_ENV, grammars=grammars), True, SOURCE_ENV)
    if env_file:
        where = f"{SOURCE_ENV_FILE} {env_file}"
        url = read_url_file(env_file, where)
        return ResolvedURL(validate_url(url, where, reveal=False, grammars=grammars), True, where)
    configured = os.environ.get(ENV_DEFAULT_URL)
    if configured:
        where = f"${ENV_DEFAULT_URL}"
        return ResolvedURL(validate_url(configured, where, grammars=grammars), False, where)
    return ResolvedURL(DEFAULT_URL, False, SOURCE_DEFAULT)


def from_file(source: str) -> bool:
    """Whether a URL of this source was read from a file (whose content an error never shows)."""
    return source.startswith((SOURCE_FILE_OPTION, SOURCE_ENV_FILE))


MAX_URL_FILE = 64 * 1024  # a URL is a line; a bigger file is the wrong file


def read_url_file(path: str, where: str) -> str:
    """The Redis URL kept in the file at ``path``, surrounding whitespace (the trailing newline) ignored.

    :class:`ConfigError` naming ``where`` (the option or variable, and the path) if the file cannot be
    read, is empty or holds more than one line; never with the content, which holds the password.
    """
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(MAX_URL_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the Redis URL from {where}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read the Redis URL from {where}: not UTF-8 text") from None
    url = text.strip()
    if not url:
        raise ConfigError(f"{where} is empty: expected the Redis URL on one line")
    if len(text) > MAX_URL_FILE or "\n" in url:
        raise ConfigError(f"{where} holds more than a URL: expected the Redis URL alone, on one line")
    return url


def validate_url(url: str, where: str = "", *, reveal: bool = True, grammars: Grammars) -> str:
    """``url`` if it is a well-formed Redis URL, else :class:`ConfigError` naming the bad part.

    Here, what every scheme shares: no unprintable character, a scheme of ``grammars`` followed
    by ``://``; then that scheme's own grammar (its backend's). redis-py fills in defaults for what it
    cannot read (``redis:/host`` or ``redis:///0`` means localhost), so a typo would silently
    connect somewhere else than the URL that the log shows: refuse it instead. ``where`` names the
    source; ``reveal=False`` (a URL read from a secret file) keeps even the masked URL out of the
    message, and so does a string without a scheme (likely a bare password).
    """
    scheme, sep, _ = url.partition("://")
    reveal = reveal and bool(sep or url.partition(":")[0] in grammars)
    control = next((i for i, c in enumerate(url) if not c.isprintable()), None)
    if control is not None:
        # Not shown: a line break in a log or error message is a line someone else could have written.
        raise ConfigError(
            f"{intro('', where, False)}: an unprintable character ({url[control]!r}) at position {control + 1}"
            + (" (a trailing newline?)" if url[control:].strip() == "" else "")
        )
    if not sep:
        if url.partition(":")[0] in grammars:
            raise ConfigError(
                f"{intro(url, where, reveal)}: expected {url.partition(':')[0]}:// (two slashes) after the scheme"
            )
        raise ConfigError(
            f"{intro(url, where, reveal)}: no scheme; expected redis://host:port/db, rediss://..., unix:///path"
        )
    if scheme not in grammars:
        raise ConfigError(
            f"{intro(url, where, reveal)}: unsupported scheme {scheme!r}; use redis://, rediss://, unix:///path "
            "redis+cluster://host:port,host:port or redis+sentinel://host:port,host:port/service"
        )
    grammars[scheme](url, where, reveal)
    return url


def intro(url: str, where: str, reveal: bool) -> str:
    """How a URL error starts: ``invalid Redis URL <masked URL> (from <where>)``."""
    intro = f"invalid Redis URL {redact_url(url)}" if reveal else "invalid Redis URL"
    return intro + (f" (from {where})" if where else "")


def split_url(url: str, intro: str) -> SplitResult:
    """``urlsplit``, with its ValueError (an IPv6 host's brackets, mostly) as one line naming the host."""
    try:
        return urlsplit(url)
    except ValueError as exc:
        host = url.partition("://")[2].partition("/")[0].rpartition("@")[2]
        if host.count("[") != host.count("]"):
            raise ConfigError(
                f"{intro}: unbalanced brackets in the host {host!r}; an IPv6 host is written [::1]:6379"
            ) from None
        raise ConfigError(f"{intro}: invalid host {host!r}: {exc}") from None


# The query options a URL may set, as redis-py reads them: its connection settings (the TLS ones for
# rediss:// only). Anything else is a typo to refuse: redis-py would pass it on as a keyword and fail
# at the first connection with a TypeError, or ignore it.
URL_OPTIONS = (
    "db", "username", "password", "client_name", "socket_timeout", "socket_connect_timeout",
    "socket_keepalive", "socket_read_size", "retry_on_timeout", "health_check_interval", "max_connections",
    "timeout",
)  # fmt: skip
TLS_OPTIONS = (
    "ssl_keyfile", "ssl_certfile", "ssl_cert_reqs", "ssl_ca_certs", "ssl_ca_data", "ssl_ca_path",
    "ssl_check_hostname", "ssl_password", "ssl_min_version", "ssl_ciphers",
)  # fmt: skip


def check_options(url: str, where: str, reveal: bool, scheme: str) -> None:
    """:class:`ConfigError` for a query option redis-py does not take for ``scheme`` (redis or rediss)."""
    allowed = URL_OPTIONS + (TLS_OPTIONS if scheme == "rediss" else ())
    base, _, query = url.partition("?")
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name in allowed:
            continue
        # Named without its value, and shown without the query string: the value of a misspelt
        # ?pasword= is still a password.
        start = intro(base, where, reveal)
        if name in TLS_OPTIONS:
            raise ConfigError(f"{start}: option {name!r} needs a TLS URL (rediss://)")
        close = difflib.get_close_matches(name, allowed, n=1)
        expected = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
        raise ConfigError(f"{start}: unknown option {name!r} in the query string; {expected}")


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages.

    redis-py also reads ``?password=`` from the query string, so secrets there are masked too.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return _redact_unparsed(url)
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


def _redact_unparsed(url: str) -> str:
    # A URL whose port does not parse: mask whatever stands between the first ":" of the user
    # info and the last "@", so the bad part can still be shown.
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, host = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{host}"
    tail, qmark, query = tail.partition("?")
    if qmark:
        query = "&".join(
            f"{item.split('=', 1)[0]}=***" if _is_secret(unquote(item.split("=", 1)[0]).lower()) else item
            for item in query.split("&")
        )
    return f"{scheme}{sep}{netloc}{slash}{tail}{qmark}{query}"


def _is_secret(key: str) -> bool:
    return "password" in key or "token" in key or "secret" in key


# -- pieces of the backends' grammars (eventbus._backends.cluster, .sentinel) ------------------


def server_url(scheme: str, username: str | None, password: str | None, host: str, port: int, db: int) -> str:
    """``scheme://[user[:password]@]host:port/db``, credentials percent-encoded, IPv6 hosts bracketed."""
    auth = ""
    if password is not None:
        auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
    elif username:
        auth = f"{quote(username, safe='')}@"
    host_part = f"[{host}]" if ":" in host else host
    return f"{scheme}://{auth}{host_part}:{port}/{db}"


def split_credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """``[user[:password]@]hosts`` -> (username, password, hosts), the credentials percent-decoded."""
    userinfo, _, hosts = netloc.rpartition("@")
    if not userinfo:
        return None, None, hosts
    user, has_password, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) if has_password else None, hosts


def host_port(item: str, default_port: int) -> tuple[str, int] | None:
    """One ``host[:port]`` of a node list (an IPv6 host in brackets); None if malformed."""
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        host, port = item.strip(), str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def autopipeline_enabled(choice: bool | None = None) -> bool:
    """Whether the command client auto-pipelines: ``choice`` when code or ``--no-autopipeline``
    made one, else $EVENTBUS_AUTOPIPELINE (``0`` turns it off), else on."""
    if choice is not None:
        return choice
    value = os.environ.get(ENV_AUTOPIPELINE, "").strip().lower()
    if not value or value in _ON:
        return True
    if value in _OFF:
        return False
    raise ConfigError(f"${ENV_AUTOPIPELINE} must be 1 or 0 (on or off), not {value!r}")
