"""Where Redis is: URL resolution, and URLs made safe to log."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from redis.asyncio.connection import parse_url

from eventbus.errors import ConfigError

ENV_URL = "EVENTBUS_URL"
# Where to look when nothing is configured, before falling back to an embedded Redis. The
# override exists for machines (and tests) where something else owns localhost:6379.
ENV_DEFAULT_URL = "EVENTBUS_DEFAULT_URL"
DEFAULT_URL = "redis://localhost:6379/0"
SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")


# Where a URL came from, as the log names it.
SOURCE_OPTION = "--url"
SOURCE_ENV = f"${ENV_URL}"
SOURCE_CODE = "code"
SOURCE_DEFAULT = "default"
SOURCE_EMBEDDED = "embedded"
# Set by the --workers supervisor when the --url it hands its workers is its embedded Redis.
ENV_URL_SOURCE = "EVENTBUS_URL_SOURCE"


@dataclass(frozen=True, slots=True)
class ResolvedURL:
    url: str
    explicit: bool  # given by --url / EVENTBUS_URL / code; the default may fall back to an embedded Redis
    source: str  # "--url", "$EVENTBUS_URL", "code", "default" (or "$EVENTBUS_DEFAULT_URL")


def resolve_url(url: str | None, source: str = SOURCE_OPTION) -> ResolvedURL:
    """The URL to use: the argument (from ``source``), else $EVENTBUS_URL, else the local default."""
    if url:
        return ResolvedURL(validate_url(url), True, source)
    env = os.environ.get(ENV_URL)
    if env:
        return ResolvedURL(validate_url(env, f"${ENV_URL}"), True, SOURCE_ENV)
    if os.environ.get(ENV_DEFAULT_URL):
        return ResolvedURL(default_url(), False, f"${ENV_DEFAULT_URL}")
    return ResolvedURL(default_url(), False, SOURCE_DEFAULT)


def default_url() -> str:
    configured = os.environ.get(ENV_DEFAULT_URL)
    return validate_url(configured, f"${ENV_DEFAULT_URL}") if configured else DEFAULT_URL


def validate_url(url: str, where: str = "") -> str:
    """``url`` if it is a well-formed Redis URL, else :class:`ConfigError` naming the bad part.

    redis-py fills in defaults for what it cannot read (``redis:/host`` or ``redis:///0`` means
    localhost, ``/abc`` means db 0, ``unix://tmp/x.sock`` means ``/x.sock``), so a typo would
    silently connect somewhere else than the URL that the log shows: refuse it instead.
    """
    shown = redact_url(url)
    intro = f"invalid Redis URL {shown}" + (f" (from {where})" if where else "")
    scheme, sep, _ = url.partition("://")
    if not sep:
        if url.partition(":")[0] in SCHEMES:
            raise ConfigError(f"{intro}: expected {url.partition(':')[0]}:// (two slashes) after the scheme")
        raise ConfigError(f"{intro}: no scheme; expected redis://host:port/db, rediss://..., unix:///path")
    if scheme not in SCHEMES:
        raise ConfigError(
            f"{intro}: unsupported scheme {scheme!r}; use redis://, rediss://, unix:///path "
            "redis+cluster://host:port,host:port or redis+sentinel://host:port,host:port/service"
        )
    if scheme.endswith("+cluster"):
        parse_cluster_url(url)  # raises ConfigError on a malformed seed list
        return url
    if scheme.endswith("+sentinel"):
        parse_sentinel_url(url)  # raises ConfigError naming the bad part
        return url
    parts = urlsplit(url)
    if scheme == "unix":
        if parts.hostname:
            raise ConfigError(
                f"{intro}: {parts.hostname!r} is read as a host, not as part of the socket path; "
                f"write unix:///{parts.hostname}{parts.path} (three slashes for an absolute path)"
            )
        if not parts.path:
            raise ConfigError(f"{intro}: no socket path; expected unix:///path/to/redis.sock")
    else:
        port_text = parts.netloc.rpartition("@")[2]
        port_text = port_text.rpartition("]")[2] if port_text.startswith("[") else port_text
        if not parts.hostname:
            raise ConfigError(f"{intro}: no host; expected {scheme}://host:port/db")
        try:
            port = parts.port
        except ValueError:
            port = None
            bad = port_text.partition(":")[2]
            raise ConfigError(f"{intro}: invalid port {bad!r}; expected a number from 1 to 65535") from None
        if port == 0 or (port is None and port_text.endswith(":")):
            raise ConfigError(f"{intro}: invalid port {port_text.partition(':')[2]!r}; expected 1 to 65535")
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ConfigError(f"{intro}: invalid database number {db!r} in the path; expected /0, /1, ...")
    try:
        parse_url(url)  # the query string's options (db=, socket_timeout=, ...) as redis-py reads them
    except ValueError as exc:
        raise ConfigError(f"{intro}: {exc}") from None
    return url


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***``, for logs and error messages.

    redis-py also reads ``?password=`` from the query string, so secrets there are masked too.
    """
    parts = urlsplit(url)
    try:
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


# -- the cluster URL grammar (pure: used by validation here and by eventbus.backends.cluster) --

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def server_url(scheme: str, username: str | None, password: str | None, host: str, port: int, db: int) -> str:
    """``scheme://[user[:password]@]host:port/db``, credentials percent-encoded, IPv6 hosts bracketed."""
    auth = ""
    if password is not None:
        auth = f"{quote(username or '', safe='')}:{quote(password, safe='')}@"
    elif username:
        auth = f"{quote(username, safe='')}@"
    host_part = f"[{host}]" if ":" in host else host
    return f"{scheme}://{auth}{host_part}:{port}/{db}"


@dataclass(frozen=True, slots=True)
class ClusterURL:
    seeds: tuple[tuple[str, int], ...]
    scheme: str  # "redis" or "rediss": what each node's own URL uses
    username: str | None
    password: str | None
    query: str

    def node_url(self, host: str, port: int) -> str:
        """A plain URL for one node, with the cluster URL's credentials and options."""
        url = server_url(self.scheme, self.username, self.password, host, port, 0)
        return url + (f"?{self.query}" if self.query else "")

    def node_urls(self) -> list[str]:
        return [self.node_url(host, port) for host, port in self.seeds]


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def _split_credentials(netloc: str) -> tuple[str | None, str | None, str]:
    """``[user[:password]@]hosts`` -> (username, password, hosts), the credentials percent-decoded."""
    userinfo, _, hosts = netloc.rpartition("@")
    if not userinfo:
        return None, None, hosts
    user, has_password, secret = userinfo.partition(":")
    return unquote(user) or None, unquote(secret) if has_password else None, hosts


def _host_port(item: str, default_port: int) -> tuple[str, int] | None:
    """One ``host[:port]`` of a node list (an IPv6 host in brackets); None if malformed."""
    host, colon, port = item.strip().rpartition(":")
    if not colon:
        host, port = item.strip(), str(default_port)
    host = host.strip("[]")
    if not host or not port.isdigit():
        return None
    return host, int(port)


def parse_cluster_url(url: str) -> ClusterURL:
    """Split ``redis+cluster://[user:pass@]h1:p1,h2:p2`` into seeds; :class:`ConfigError` if malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ConfigError(f"not a cluster URL: {redact_url(url)} (expected redis+cluster://host:port,...)")
    parts = urlsplit(f"redis://{rest}")
    netloc = parts.netloc
    username, password, hosts = _split_credentials(netloc)
    if parts.path not in ("", "/", "/0"):
        raise ConfigError(f"a cluster has no database number: drop {parts.path!r} from {redact_url(url)}")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        seed = _host_port(item, 6379)
        if seed is None:
            raise ConfigError(f"invalid seed {item!r} in cluster URL {redact_url(url)}: expected host:port")
        seeds.append(seed)
    return ClusterURL(tuple(seeds), CLUSTER_SCHEMES[scheme], username, password, parts.query)


# -- the sentinel URL grammar (pure: used by validation here and by eventbus.backends.sentinel) --

SENTINEL_SCHEMES = {"redis+sentinel": "redis", "rediss+sentinel": "rediss"}
# Query options meant for the sentinels themselves, not for the master.
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True, slots=True)
class SentinelURL:
    sentinels: tuple[tuple[str, int], ...]
    service: str  # the master's name, as in ``sentinel monitor <name> ...``
    scheme: str  # "redis" or "rediss": what the master's own URL uses
    username: str | None  # the master's credentials (the sentinels' go in the query string)
    password: str | None
    db: int
    sentinel_username: str | None
    sentinel_password: str | None

    def master_url(self, host: str, port: int) -> str:
        """A plain URL for the master the sentinels named, with this URL's credentials and db."""
        return server_url(self.scheme, self.username, self.password, host, port, self.db)


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0] in SENTINEL_SCHEMES


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split ``redis+sentinel://[user:pass@]h1:p1[,h2:p2]/service[?db=N]``; :class:`ConfigError` if malformed.

    The sentinels' own credentials, if they need any, go in ``?sentinel_username=&sentinel_password=``.
    """
    shown = redact_url(url)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        raise ConfigError(f"not a sentinel URL: {shown} (expected redis+sentinel://host:port,.../service)")
    intro = f"invalid sentinel URL {shown}"
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    username, password, hosts = _split_credentials(netloc)
    sentinels: list[tuple[str, int]] = []
    for item in hosts.split(","):
        node = _host_port(item, 26379)  # the sentinels' default port
        if node is None or not 0 < node[1] < 65536:
            raise ConfigError(f"{intro}: invalid sentinel {item!r}; expected host:port")
        sentinels.append(node)
    service, slash, db_text = unquote(path).partition("/")
    if not service:
        raise ConfigError(f"{intro}: no service name; expected {scheme}://host:port/service_name")
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        options[unquote(key)] = unquote(value)
    if slash and db_text:
        if "db" in options:
            raise ConfigError(f"{intro}: the database is given twice (/{db_text} and ?db=); keep one")
        options["db"] = db_text
    unknown = sorted(set(options) - {"db", *SENTINEL_OPTIONS})
    if unknown:
        raise ConfigError(f"{intro}: unknown option {unknown[0]!r}; expected db, sentinel_username, sentinel_password")
    db_value = options.get("db", "0")
    if not db_value.isdigit():
        raise ConfigError(f"{intro}: invalid database number {db_value!r}; expected ?db=0, ?db=1, ...")
    return SentinelURL(
        tuple(sentinels),
        service,
        SENTINEL_SCHEMES[scheme],
        username,
        password,
        int(db_value),
        options.get("sentinel_username") or None,
        options.get("sentinel_password") or None,
    )
