"""Where Redis is: URL resolution, and URLs made safe to log; whether ctx.redis auto-pipelines."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlsplit, urlunsplit

from redis.asyncio.connection import parse_url

from eventbus._errors import ConfigError

ENV_URL = "EVENTBUS_URL"
# A file holding the URL, as container secrets are mounted: the password stays out of argv and env.
ENV_URL_FILE = "EVENTBUS_URL_FILE"
# Where to look when nothing is configured, before falling back to an embedded Redis. The
# override exists for machines (and tests) where something else owns localhost:6379.
ENV_DEFAULT_URL = "EVENTBUS_DEFAULT_URL"
DEFAULT_URL = "redis://localhost:6379/0"
SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster", "redis+sentinel", "rediss+sentinel")


# Where a URL came from, as the log names it.
SOURCE_OPTION = "--url"
SOURCE_ENV = f"${ENV_URL}"
SOURCE_FILE_OPTION = "--url-file"  # named with the file's path: "--url-file /run/secrets/redis"
SOURCE_ENV_FILE = f"${ENV_URL_FILE}"
SOURCE_CODE = "code"
SOURCE_DEFAULT = "default"
SOURCE_EMBEDDED = "embedded"
# Set by the --workers supervisor when the --url it hands its workers is its embedded Redis.
ENV_URL_SOURCE = "EVENTBUS_URL_SOURCE"
# 0 makes ctx.redis a plain redis.asyncio client wherever code or the CLI does not choose.
ENV_AUTOPIPELINE = "EVENTBUS_AUTOPIPELINE"
_ON = ("1", "true", "yes", "on")
_OFF = ("0", "false", "no", "off")


@dataclass(frozen=True, slots=True)
class ResolvedURL:
    url: str
    explicit: bool  # given by --url / EVENTBUS_URL / code; the default may fall back to an embedded Redis
    # "--url", "--url-file PATH", "$EVENTBUS_URL", "$EVENTBUS_URL_FILE PATH", "code", "default"
    # (or "$EVENTBUS_DEFAULT_URL")
    source: str


def resolve_url(url: str | None, source: str = SOURCE_OPTION) -> ResolvedURL:
    """The URL to use: the argument (from ``source``), else $EVENTBUS_URL or the file that
    $EVENTBUS_URL_FILE names (not both), else the local default."""
    if url:
        return ResolvedURL(validate_url(url, source, reveal=not from_file(source)), True, source)
    env, env_file = os.environ.get(ENV_URL), os.environ.get(ENV_URL_FILE)
    if env and env_file:
        raise ConfigError(f"both ${ENV_URL} and ${ENV_URL_FILE} are set: set one (they are two ways to give one URL)")
    if env:
        return ResolvedURL(validate_url(env, SOURCE_ENV), True, SOURCE_ENV)
    if env_file:
        where = f"{SOURCE_ENV_FILE} {env_file}"
        return ResolvedURL(validate_url(read_url_file(env_file, where), where, reveal=False), True, where)
    if os.environ.get(ENV_DEFAULT_URL):
        return ResolvedURL(default_url(), False, f"${ENV_DEFAULT_URL}")
    return ResolvedURL(default_url(), False, SOURCE_DEFAULT)


def default_url() -> str:
    configured = os.environ.get(ENV_DEFAULT_URL)
    return validate_url(configured, f"${ENV_DEFAULT_URL}") if configured else DEFAULT_URL


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


def validate_url(url: str, where: str = "", *, reveal: bool = True) -> str:
    """``url`` if it is a well-formed Redis URL, else :class:`ConfigError` naming the bad part.

    redis-py fills in defaults for what it cannot read (``redis:/host`` or ``redis:///0`` means
    localhost, ``/abc`` means db 0, ``unix://tmp/x.sock`` means ``/x.sock``), so a typo would
    silently connect somewhere else than the URL that the log shows: refuse it instead.
    ``where`` names the source; ``reveal=False`` (a URL read from a secret file) keeps even the
    masked URL out of the message, and so does a string without a scheme (likely a bare password).
    """
    scheme, sep, _ = url.partition("://")
    reveal = reveal and bool(sep or url.partition(":")[0] in SCHEMES)
    control = next((i for i, c in enumerate(url) if not c.isprintable()), None)
    if control is not None:
        # Not shown: a line break in a log or error message is a line someone else could have written.
        raise ConfigError(
            f"{_intro('', where, False)}: an unprintable character ({url[control]!r}) at position {control + 1}"
            + (" (a trailing newline?)" if url[control:].strip() == "" else "")
        )
    intro = _intro(url, where, reveal)
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
        _check_options(url, where, reveal, CLUSTER_SCHEMES[scheme])
        return url
    if scheme.endswith("+sentinel"):
        parse_sentinel_url(url)  # raises ConfigError naming the bad part
        return url
    parts = _split(url, intro)
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
    _check_options(url, where, reveal, scheme)
    try:
        parse_url(url)  # the query string's options (db=, socket_timeout=, ...) as redis-py reads them
    except ValueError as exc:
        raise ConfigError(f"{intro}: {exc}") from None
    return url


def _intro(url: str, where: str, reveal: bool) -> str:
    intro = f"invalid Redis URL {redact_url(url)}" if reveal else "invalid Redis URL"
    return intro + (f" (from {where})" if where else "")


def _split(url: str, intro: str) -> SplitResult:
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


def _check_options(url: str, where: str, reveal: bool, scheme: str) -> None:
    """:class:`ConfigError` for a query option redis-py does not take for ``scheme`` (redis or rediss)."""
    allowed = URL_OPTIONS + (TLS_OPTIONS if scheme == "rediss" else ())
    base, _, query = url.partition("?")
    for name, _ in parse_qsl(query, keep_blank_values=True):
        if name in allowed:
            continue
        # Named without its value, and shown without the query string: the value of a misspelt
        # ?pasword= is still a password.
        intro = _intro(base, where, reveal)
        if name in TLS_OPTIONS:
            raise ConfigError(f"{intro}: option {name!r} needs a TLS URL (rediss://)")
        close = difflib.get_close_matches(name, allowed, n=1)
        expected = f"did you mean {close[0]!r}?" if close else f"expected one of {', '.join(allowed)}"
        raise ConfigError(f"{intro}: unknown option {name!r} in the query string; {expected}")


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


# -- the cluster URL grammar (pure: used by validation here and by eventbus._backends.cluster) --

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
    parts = _split(f"redis://{rest}", f"invalid cluster URL {redact_url(url)}")
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


# -- the sentinel URL grammar (pure: used by validation here and by eventbus._backends.sentinel) --

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
