"""Everything a run can be told, in one place: each default, and how the command line shows it.

:class:`Settings` (what a :class:`~eventbus.Runner` takes) and :class:`ConnectionSettings` (what a
backend takes) state each default once, as their fields' defaults. A field that the command line
offers carries its :class:`Option` as field metadata (flag, help text, parser, environment
variable, the commands that take it), so the CLI's parser is derived from these records and never
restates a default (:mod:`eventbus._cli`); a field the CLI does not offer says why
(:func:`code_only`).

A leaf module: backends read :class:`ConnectionSettings`, and so must be able to import it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from typing import Any

from eventbus._flow import ReadGate
from eventbus._logs import LEVELS, parse_level
from eventbus._urls import DEFAULT_URL, ENV_AUTOPIPELINE, ENV_URL, ENV_URL_FILE, SOURCE_CODE

MIB = 1024 * 1024

# Defaults that code outside a Settings record needs too (a DeadLetterStore made by hand, the
# clients of `eventbus publish`, the probes' own default).
DEFAULT_MAX_PAYLOAD = MIB
DEFAULT_DEAD_LETTER_STREAM = "eventbus:dead-letter"
DEFAULT_DEAD_LETTER_MAX_BYTES = 32 * MIB
ENV_DEAD_LETTER_MAX_BYTES = "EVENTBUS_DEAD_LETTER_MAX_BYTES"
DEFAULT_HEALTH_DEADLINE = 1.0
DEFAULT_METRICS_ADDR = "0.0.0.0"
DEFAULT_MAX_CONNECTIONS = 64


_SIZE = re.compile(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``33554432``, ``32MiB``, ``32M``, ``512KiB``, ``1GiB`` (powers of 1024) as a number of bytes."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (bytes, or a number with KiB, MiB or GiB)")
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2).lower() or " ")  # type: ignore[no-any-return]


@dataclass(frozen=True, slots=True)
class Option:
    """How the command line offers a setting; the default is the field's own.

    ``help``: ``{default}`` in it becomes the default the command shows. ``parse``: the value from
    its text (a ValueError is the one-line usage error); None makes a flag without a value, which
    stores ``const``. ``commands``: the subcommands that take the option; ``defaults``: a command's
    own default where it differs from the field's (``publish`` gives up sooner than ``run``);
    ``aliases``: a command's other spellings. ``repeat``: given once per value (``--middleware``).
    ``zero_disables``: 0 on the command line means None in the field ("0 disables"). ``env``: the
    environment variable read when neither the option nor code gives a value.
    """

    flag: str
    help: str
    parse: Callable[[str], Any] | None = None
    metavar: str | None = None
    commands: tuple[str, ...] = ("run",)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    const: Any = False
    repeat: bool = False
    zero_disables: bool = False
    env: str | None = None


CLI = "cli"  # the field metadata key of an Option
CODE_ONLY = "code_only"  # ... and of the reason a field has none


def option(default: Any = MISSING, *, default_factory: Any = MISSING, **how: Any) -> Any:
    """A dataclass field with this default, offered on the command line as :class:`Option` says."""
    return field(default=default, default_factory=default_factory, metadata={CLI: Option(**how)})


def code_only(default: Any, *, why: str) -> Any:
    """A dataclass field that the command line does not offer, and ``why``."""
    return field(default=default, metadata={CODE_ONLY: why})


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """How a backend connects and keeps its connections alive (arq's ``RedisSettings``, in spirit).

    ``gate`` is shared with the handlers' workers: ``overflow="pause"`` stops every subscription
    connection through it.
    """

    ping_interval: float = option(
        5.0, flag="--ping-interval", parse=float,
        help="seconds between PINGs on the subscription connection, to find half-open ones ({default})",
    )  # fmt: skip
    ping_timeout: float = option(
        5.0, flag="--ping-timeout", parse=float, help="seconds a PING may go unanswered before reconnecting ({default})"
    )
    reconnect_max_delay: float = code_only(5.0, why="the cap of the reconnect backoff; its default suits every run")
    connect_timeout: float = option(
        15.0,
        flag="--connect-timeout",
        parse=float,
        help="seconds to keep retrying an unreachable Redis before giving up ({default})",
        commands=("run", "publish", "request", "check", "streams", "dead-letters", "dashboard"),
        # A one-off command is someone waiting at a prompt; a runner may be starting beside its Redis.
        defaults={"publish": 5.0, "request": 5.0, "dead-letters": 5.0, "check": 2.0, "streams": 2.0, "dashboard": 5.0},
    )
    max_connections: int = code_only(
        DEFAULT_MAX_CONNECTIONS, why="ctx.redis's pool size; auto-pipelining makes a few connections enough"
    )
    # ctx.redis auto-pipelines (None: unless $EVENTBUS_AUTOPIPELINE is 0); False: a plain
    # redis.asyncio.Redis. Cluster and sentinel URLs always get redis-py's own clients.
    autopipeline: bool | None = option(
        None,
        flag="--no-autopipeline",
        help="make ctx.redis a plain redis.asyncio client instead of the auto-pipelining one "
        f"(default: auto-pipelining, unless ${ENV_AUTOPIPELINE} is 0)",
        env=ENV_AUTOPIPELINE,
    )
    # With nothing configured and nothing answering at the default URL, start an embedded Redis.
    embedded: bool = option(
        True,
        flag="--no-embedded",
        help="fail instead of starting an embedded Redis when nothing answers at the default URL",
    )
    gate: ReadGate = field(
        default_factory=ReadGate, compare=False, metadata={CODE_ONLY: "the runner's own, shared with its workers"}
    )


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a :class:`~eventbus.Runner` can be told, in one record (the CLI's options are derived from it).

    ``url``: Redis URL; None means $EVENTBUS_URL, else redis://localhost:6379/0 with an embedded
    Redis started if nothing answers there (unless ``connection.embedded`` is False).
    ``url_source``: where ``url`` came from, as the log names it ("code" unless the CLI says "--url").
    ``log_level``: set up logging like the CLI at this level when the application has not configured
    logging itself (see :func:`eventbus._logs.configure`); None leaves logging alone.
    ``middleware``: global middleware, outermost first (see :mod:`eventbus.middleware`): functions,
    or ``"pkg.mod:fn"`` specs as ``--middleware`` takes them.
    """

    url: str | None = option(
        None,
        flag="--url",
        parse=str,
        help=f"Redis URL (default: ${ENV_URL} or ${ENV_URL_FILE}, else {DEFAULT_URL})",
        commands=("run", "publish", "request", "check", "streams", "dead-letters", "dashboard"),
        env=ENV_URL,
    )
    url_source: str = code_only(SOURCE_CODE, why="the CLI names where the URL came from: --url, --url-file, ...")
    grace: float = option(
        10.0, flag="--grace", parse=float, help="seconds to finish queued work on shutdown ({default})"
    )
    max_payload: int | None = option(
        DEFAULT_MAX_PAYLOAD,
        flag="--max-payload",
        parse=int,
        help="largest payload in bytes delivered to handlers; larger ones are dead-lettered ({default})",
        zero_disables=True,
    )
    dead_letter_stream: str = option(
        DEFAULT_DEAD_LETTER_STREAM,
        flag="--dead-letter-stream",
        parse=str,
        metavar="KEY",
        help="the app's dead-letter stream ({default})",
        commands=("run", "check", "dead-letters", "dashboard"),
        aliases={"dead-letters": ("--stream",)},
    )
    # The dead-letter stream's byte budget; None: $EVENTBUS_DEAD_LETTER_MAX_BYTES, else 32 MiB.
    dead_letter_max_bytes: int | None = option(
        None,
        flag="--dead-letter-max-bytes",
        parse=parse_size,
        metavar="SIZE",
        help="byte budget of the dead-letter stream, the oldest entries trimmed beyond it: bytes or 32MiB, 1GiB "
        f"(${ENV_DEAD_LETTER_MAX_BYTES}, else {DEFAULT_DEAD_LETTER_MAX_BYTES // MIB}MiB)",
        env=ENV_DEAD_LETTER_MAX_BYTES,
    )
    # Off from code (a library does not log on a timer unasked); every minute from the CLI.
    stats_interval: float | None = option(
        None,
        flag="--stats-interval",
        parse=float,
        help="seconds between summary log lines; 0 disables ({default})",
        defaults={"run": 60.0},
        zero_disables=True,
    )
    metrics_port: int | None = option(
        None,
        flag="--metrics-port",
        parse=int,
        help="serve Prometheus metrics on this port at /metrics (off by default; 0 picks a free port)",
    )
    metrics_addr: str = option(
        DEFAULT_METRICS_ADDR,
        flag="--metrics-addr",
        parse=str,
        help="address the metrics endpoint listens on ({default})",
    )
    log_level: str | None = option(
        "info",
        flag="--log-level",
        parse=parse_level,
        metavar="LEVEL",
        help=f"{', '.join(LEVELS)} (any case; {{default}})",
    )
    # /healthz, /readyz: seconds the loop may take to answer.
    health_deadline: float = option(
        DEFAULT_HEALTH_DEADLINE,
        flag="--health-timeout",
        parse=float,
        help="seconds the event loop may take to answer /healthz and /readyz on the metrics port ({default})",
    )
    middleware: Sequence[Any] = option(
        (),
        flag="--middleware",
        parse=str,
        metavar="PKG.MOD:FN",
        repeat=True,
        help="global middleware around every handler (repeatable; first given is outermost); "
        "a factory may be called with literal arguments: 'eventbus.middlewares.timeout:timeout(5)'",
    )
    connection: ConnectionSettings = field(
        default_factory=ConnectionSettings, metadata={CODE_ONLY: "its fields are settings of their own"}
    )


_SETTINGS = frozenset(f.name for f in fields(Settings)) - {"connection"}
_CONNECTION = frozenset(f.name for f in fields(ConnectionSettings)) - {"gate"}


def settings_from(settings: Settings | None = None, **options: Any) -> Settings:
    """``settings`` (default: the defaults) with flat keyword options applied, as ``Runner(..., grace=5)``.

    Connection options (``ping_interval``, ``connect_timeout``, ``embedded``, ...) go to
    ``settings.connection``; an unknown name is a TypeError, as for any function.
    """
    base = settings if settings is not None else Settings()
    unknown = set(options) - _SETTINGS - _CONNECTION
    if unknown:
        raise TypeError(f"Runner() got an unexpected keyword argument {sorted(unknown)[0]!r}")
    connection = {k: v for k, v in options.items() if k in _CONNECTION}
    own = {k: v for k, v in options.items() if k in _SETTINGS}
    if isinstance(own.get("middleware"), list):
        own["middleware"] = tuple(own["middleware"])  # a record of settings holds no mutable list
    if connection:
        own["connection"] = replace(base.connection, **connection)
    return replace(base, **own) if own else base


def setting_fields() -> Iterator[Field[Any]]:
    """Every setting, flat: the fields of :class:`Settings`, then those of :class:`ConnectionSettings`."""
    for f in fields(Settings):
        if f.name != "connection":
            yield f
    yield from fields(ConnectionSettings)


def field_default(f: Field[Any]) -> Any:
    return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default


@dataclass(frozen=True, slots=True)
class CommandOption:
    """A setting as one command offers it: the field's name, its :class:`Option`, the default shown."""

    name: str
    option: Option
    default: Any


def command_options(command: str) -> list[CommandOption]:
    """The settings ``command`` offers on the command line, in the order of the fields."""
    found = []
    for f in setting_fields():
        how: Option | None = f.metadata.get(CLI)
        if how is not None and command in how.commands:
            found.append(CommandOption(f.name, how, how.defaults.get(command, field_default(f))))
    return found


def from_options(values: Mapping[str, Any], command: str = "run") -> Settings:
    """The :class:`Settings` that ``command``'s options (parsed, by field name) describe."""
    options: dict[str, Any] = {}
    for offered in command_options(command):
        value = values[offered.name]
        if offered.option.zero_disables and value == 0:
            value = None
        options[offered.name] = tuple(value) if offered.option.repeat else value
    return settings_from(**options)


def as_options(settings: Settings) -> dict[str, Any]:
    """Every field of ``settings`` but the read gate, flat, as :func:`settings_from` takes them.

    JSON-serialisable when the settings came from the command line (middleware given as
    ``"pkg.mod:fn"`` specs): what a ``run --workers`` supervisor hands each worker.
    """
    flat = {f.name: getattr(settings, f.name) for f in fields(Settings) if f.name != "connection"}
    flat |= {name: getattr(settings.connection, name) for name in _CONNECTION}
    flat["middleware"] = list(settings.middleware)
    return flat
