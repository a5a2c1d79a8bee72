"""``python -m eventbus``: run, publish, routes, docs, dead-letters.

Exit codes: 0 success; 1 runtime failure (Redis unreachable, refused subscription);
2 bad usage or a handler module that cannot be loaded.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from redis.exceptions import RedisError

from eventbus import __version__
from eventbus._backends import reachable, wait_until_reachable
from eventbus._deadletter import DEFAULT_STREAM, ENV_MAX_BYTES, parse_size
from eventbus._errors import ConfigError, EventbusError, LoadError
from eventbus._hotpath import describe as describe_hot_path
from eventbus._logs import ENV_WORKER, ENV_WORKERS, LEVELS, parse_level
from eventbus._logs import configure as configure_logging
from eventbus._loops import LOOP_CHOICES, loop_factory
from eventbus._loops import run as run_on_loop
from eventbus._names import encode_name
from eventbus._payloads import describe_key, describe_payload
from eventbus._router import ensure_cwd_on_path, load_target
from eventbus._runner import DEFAULT_MAX_PAYLOAD, Runner, connect
from eventbus._supervisor import Supervisor
from eventbus._tables import aligned
from eventbus._urls import (
    ENV_URL_SOURCE,
    SOURCE_EMBEDDED,
    SOURCE_FILE_OPTION,
    SOURCE_OPTION,
    read_url_file,
    redact_url,
    resolve_url,
)
from eventbus.middleware import describe_middleware, load_middleware

log = logging.getLogger("eventbus.supervisor")  # the --workers messages keep their logger


def _log_level(value: str) -> str:
    try:
        return parse_level(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _worker_of(value: str) -> tuple[int, int]:
    """``--as-worker I/N`` (1-based, as the logs count): the 0-based index and the count."""
    index, _, count = value.partition("/")
    if not (index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise argparse.ArgumentTypeError(f"expected I/N with 1 <= I <= N, got {value!r}")
    return int(index) - 1, int(count)


class Parser(argparse.ArgumentParser):
    """argparse without abbreviations, here and in every subcommand (they are built with this class).

    An abbreviation that argparse accepts (``--work`` for ``--workers``) is an option that code
    looking at argv does not recognise, and a prefix that is unique today stops being so when an
    option is added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class _Version(argparse.Action):
    """``--version`` as one line: argparse's own action wraps it to the terminal's width."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> NoReturn:
        print(f"eventbus {__version__}, {describe_hot_path()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="eventbus", description="Event processing on Redis Pub/Sub.")
    parser.add_argument("--version", action=_Version, help="show the version and the hot path in use, and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def url_option(p: argparse.ArgumentParser, connect_timeout: float = 5.0) -> None:
        where = p.add_mutually_exclusive_group()
        where.add_argument(
            "--url", help="Redis URL (default: $EVENTBUS_URL or $EVENTBUS_URL_FILE, else redis://localhost:6379/0)"
        )
        where.add_argument(
            "--url-file",
            metavar="PATH",
            help="read the Redis URL from this file (a mounted secret): keeps the password out of the process list",
        )
        p.add_argument(
            "--connect-timeout",
            type=float,
            default=connect_timeout,
            help=f"seconds to keep retrying an unreachable Redis before giving up ({connect_timeout:g})",
        )
        p.add_argument(
            "--loop",
            default="auto",
            choices=LOOP_CHOICES,
            help="event loop: uvloop, asyncio, or auto (uvloop when it is installed; the default)",
        )

    run = commands.add_parser("run", help="run a module of handlers until SIGINT/SIGTERM/SIGHUP")
    run.add_argument("target", help="module to load: pkg.mod or pkg.mod:attr (a Router or list of handlers)")
    url_option(run, connect_timeout=15.0)
    run.add_argument("--grace", type=float, default=10.0, help="seconds to finish queued work on shutdown (10)")
    run.add_argument(
        "--log-level",
        type=_log_level,
        default="info",
        metavar="LEVEL",
        help=f"{', '.join(LEVELS)} (any case; info)",
    )
    run.add_argument(
        "--max-payload",
        type=int,
        default=DEFAULT_MAX_PAYLOAD,
        help=f"largest payload in bytes delivered to handlers; larger ones are dead-lettered ({DEFAULT_MAX_PAYLOAD})",
    )
    run.add_argument(
        "--stats-interval", type=float, default=60.0, help="seconds between summary log lines; 0 disables (60)"
    )
    dead_letter_stream_option(run)
    run.add_argument(
        "--dead-letter-max-bytes",
        type=_size,
        default=None,
        metavar="SIZE",
        help=f"byte budget of the dead-letter stream, the oldest entries trimmed beyond it: bytes or 32MiB, 1GiB "
        f"(${ENV_MAX_BYTES}, else 32MiB)",
    )
    run.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port at /metrics (off by default; 0 picks a free port)",
    )
    run.add_argument("--metrics-addr", default="0.0.0.0", help="address the metrics endpoint listens on (0.0.0.0)")
    run.add_argument(
        "--health-timeout",
        type=float,
        default=1.0,
        help="seconds the event loop may take to answer /healthz and /readyz on the metrics port (1)",
    )
    run.add_argument(
        "--ping-interval",
        type=float,
        default=5.0,
        help="seconds between PINGs on the subscription connection, to find half-open ones (5)",
    )
    run.add_argument(
        "--ping-timeout", type=float, default=5.0, help="seconds a PING may go unanswered before reconnecting (5)"
    )
    run.add_argument(
        "--no-embedded",
        action="store_true",
        help="fail instead of starting an embedded Redis when nothing answers at the default URL",
    )
    run.add_argument(
        "--no-autopipeline",
        action="store_true",
        help="make ctx.redis a plain redis.asyncio client instead of the auto-pipelining one "
        "(default: auto-pipelining, unless $EVENTBUS_AUTOPIPELINE is 0)",
    )
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N worker processes under a supervisor; @on_stream groups share their work between them (1)",
    )
    # Set by the supervisor on each worker it starts: a worker runs as one, whatever --workers says.
    run.add_argument("--as-worker", type=_worker_of, metavar="I/N", help=argparse.SUPPRESS)

    run.add_argument(
        "--reload",
        action="store_true",
        help="development only, not for production: restart when a file of the module's package changes "
        "(needs eventbus[reload])",
    )
    run.add_argument(
        "--middleware",
        action="append",
        default=[],
        metavar="PKG.MOD:FN",
        help="global middleware around every handler (repeatable; first given is outermost); "
        "a factory may be called with literal arguments: 'eventbus.middlewares.timeout:timeout(5)'",
    )

    publish = commands.add_parser("publish", help="publish a message (DATA, or standard input)")
    publish.add_argument("channel")
    publish.add_argument("data", nargs="?", help="the payload; omitted or '-' reads standard input")
    publish.add_argument("--lines", action="store_true", help="publish each line of standard input separately")
    publish.add_argument("--sharded", action="store_true", help="SPUBLISH to a sharded channel")
    publish.add_argument("--stream", action="store_true", help="CHANNEL names a stream: append entries (XADD)")
    publish.add_argument("--maxlen", type=int, help="with --stream: trim the stream to at most this many entries")
    url_option(publish)

    routes = commands.add_parser("routes", help="show what a module would subscribe to, by which handler")
    routes.add_argument("target")

    docs = commands.add_parser("docs", help="write the AsyncAPI 3.0 document of a module's channels and payloads")
    docs.add_argument("target")
    docs.add_argument("--format", default="yaml", choices=["yaml", "json", "html"], help="output format (yaml)")
    docs.add_argument("--output", "-o", help="write to this file instead of standard output")
    docs.add_argument("--url", help="the Redis to name as the server (default: $EVENTBUS_URL, else the local default)")
    docs.add_argument("--title", help="the document's title (default: the module's name)")
    docs.add_argument("--app-version", help="the document's version (default: the module's __version__, else 0.0.0)")

    dead = commands.add_parser(
        "dead-letters",
        help="inspect or replay the dead-letter stream",
        description="list shows the entries without their payloads; replay --module MODULE sends entries back "
        "only to a channel, pattern or stream their handler in MODULE consumes, and refuses the others.",
    )
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("--count", type=int, default=20, help="list: how many entries, oldest first (20)")
    dead.add_argument(
        "--module", metavar="TARGET", help="replay: the handler module (pkg.mod[:attr]) that decides where entries go"
    )
    dead.add_argument("--id", action="append", default=[], help="replay: this entry (repeatable)")
    dead.add_argument("--all", action="store_true", help="replay: every entry")
    dead.add_argument(
        "--dry-run", action="store_true", help="replay: say what would be replayed or refused; change nothing"
    )
    dead.add_argument("--keep", action="store_true", help="replay: keep replayed entries in the stream")
    dead_letter_stream_option(dead, "--stream")
    url_option(dead)

    check = commands.add_parser(
        "check",
        help="exit 0 if Redis answers (and, with --module, the module loads and can subscribe); else 1",
        description="Checks from outside a runner: Redis answers PING (with the URL's credentials); "
        "with --module, the module loads (else exit 2), its channels and patterns can be subscribed to "
        "and its streams are streams or absent. Nothing is consumed. A running process answers "
        "/healthz and /readyz on its metrics port instead.",
    )
    check.add_argument("--module", metavar="TARGET", help="also check this handler module (pkg.mod[:attr])")
    dead_letter_stream_option(check)
    url_option(check, connect_timeout=2.0)

    streams = commands.add_parser(
        "streams", help="consumer-group lag, pending entries and their age for a module's @on_stream handlers"
    )
    streams.add_argument("target", help="module whose @on_stream handlers name the streams and groups")
    streams.add_argument("--json", action="store_true", help="one JSON array instead of the table")
    url_option(streams, connect_timeout=2.0)
    return parser


def dead_letter_stream_option(p: argparse.ArgumentParser, *aliases: str) -> None:
    p.add_argument(
        "--dead-letter-stream",
        *aliases,
        default=DEFAULT_STREAM,
        metavar="KEY",
        help=f"the app's dead-letter stream ({DEFAULT_STREAM})",
    )


def _size(value: str) -> int:
    try:
        return parse_size(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def unrecognized(parser: argparse.ArgumentParser, command: str | None, extras: Sequence[str]) -> str:
    """The one-line error for arguments no option takes, naming the closest option of ``command``."""
    sub = _subcommand(parser, command)
    options = [o for a in sub._actions if a.help != argparse.SUPPRESS for o in a.option_strings]
    prog = sub.prog
    for extra in extras:
        if extra.startswith("-"):
            name = extra.partition("=")[0]
            close = difflib.get_close_matches(name, options, n=1)
            hint = f": did you mean {close[0]}?" if close else f" (see {prog} --help)"
            return f"{prog}: error: unrecognized option {name}{hint}"
    return f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see {prog} --help)"


def _subcommand(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            sub: argparse.ArgumentParser = action.choices[command]
            return sub
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        print(unrecognized(parser, args.command, extras), file=sys.stderr)
        return 2
    try:
        _read_url_option(args)
        if getattr(args, "loop", None):
            loop_factory(args.loop)  # --loop uvloop without uvloop: one line, before anything starts
        if args.command == "run" and args.as_worker is not None:
            return _run(args)  # a worker never supervises nor reloads, whatever else argv says
        if args.command == "run" and args.workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {args.workers}")
        if args.command == "run" and args.reload:
            from eventbus._reload import run_with_reload

            configure_logging(args.log_level)
            return run_with_reload(argv, args.target, args.grace)
        if args.command == "run" and args.workers != 1:
            return _supervise(args, argv)
        if args.command == "run":
            return _run(args)
        if args.command == "publish":
            return run_on_loop(_publish(args), args.loop)
        if args.command == "routes":
            return _routes(args)
        if args.command in ("check", "streams"):
            return run_on_loop(_check(args) if args.command == "check" else _streams(args), args.loop)
        if args.command == "docs":
            return _docs(args)
        from eventbus._deadletter_cli import dead_letters

        return run_on_loop(dead_letters(args), args.loop)
    except (LoadError, ConfigError) as exc:
        print(f"eventbus: error: {exc}", file=sys.stderr)
        return 2
    except EventbusError as exc:
        print(f"eventbus: error: {exc}", file=sys.stderr)
        return 1
    except (RedisError, OSError) as exc:
        # A Redis that went away mid-command: one readable line, no traceback. redis-py's
        # messages name the host and port, never the password.
        print(f"eventbus: error: Redis: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _read_url_option(args: argparse.Namespace) -> None:
    """``args.url`` from ``--url-file`` if given, and checked now: a malformed URL is one line, exit 2.

    ``args.url_source`` says where it came from, for the startup log.
    """
    args.url_source = SOURCE_OPTION
    path = getattr(args, "url_file", None)
    if path is not None:
        args.url_source = f"{SOURCE_FILE_OPTION} {path}"
        args.url = read_url_file(path, args.url_source)
    if getattr(args, "url", None):
        resolve_url(args.url, args.url_source)


def _supervise(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """The ``run --workers N`` command: validate once, share one Redis URL, supervise N workers."""
    configure_logging(args.log_level)
    count = args.workers
    resolved = resolve_url(args.url)  # a malformed URL (or $EVENTBUS_URL) fails before anything else
    ensure_cwd_on_path()
    router = load_target(args.target)  # fail here, once, not in N children
    broadcast = [s.name for s, _ in router.routes() if s.kind != "stream"]
    if broadcast:
        log.warning(
            "%d pub/sub subscription(s) (%s) run in each of the %d workers: each of their messages is handled "
            "%d times. Only @on_stream groups share work between workers.",
            len(broadcast),
            ", ".join(repr(b) for b in broadcast[:3]) + (", ..." if len(broadcast) > 3 else ""),
            count,
            count,
        )
    from eventbus._backends.embedded import EmbeddedRedis  # only --workers needs it: keep `run` quick to start

    embedded: EmbeddedRedis | None = None
    if not resolved.explicit and not args.no_embedded and not reachable(resolved.url):
        # One embedded Redis for all the workers, or they would not share anything.
        embedded = EmbeddedRedis().start()
        log.warning("no Redis at %s: started an embedded one at %s for the workers", resolved.url, embedded.url)
        os.environ[ENV_URL_SOURCE] = SOURCE_EMBEDDED  # inherited by the workers: their log names it

    url = embedded.url if embedded is not None else None

    def command(index: int) -> list[str]:
        return [sys.executable, "-m", "eventbus", *worker_argv(argv, index, count, url)]

    try:
        return Supervisor(command, count, grace=args.grace).run()
    finally:
        if embedded is not None:
            embedded.stop()


def worker_argv(argv: Sequence[str], index: int, count: int, url: str | None = None) -> list[str]:
    """The arguments of worker ``index`` (0-based) of ``count``: the user's own, as given, marked.

    Nothing is removed or rewritten (any spelling argparse accepts stays valid), only added right
    after ``run``, ahead of a ``--`` the user may have given: the worker mark and, when the
    supervisor started an embedded Redis (so no URL was given), its URL.
    """
    at = list(argv).index("run") + 1
    added = ["--as-worker", f"{index + 1}/{count}", *(["--url", url] if url else [])]
    return [*argv[:at], *added, *argv[at:]]


def _run(args: argparse.Namespace) -> int:
    metrics_port = args.metrics_port
    if args.as_worker is not None:
        index, count = args.as_worker
        os.environ[ENV_WORKER], os.environ[ENV_WORKERS] = str(index), str(count)  # the log tag: [worker 2/4]
        if metrics_port:
            metrics_port += index  # each worker serves its own metrics, on consecutive ports
    configure_logging(args.log_level)
    ensure_cwd_on_path()
    runner = Runner(
        args.target,
        middleware=[load_middleware(spec) for spec in args.middleware],
        url=args.url,
        grace=args.grace,
        connect_timeout=args.connect_timeout,
        max_payload=args.max_payload or None,
        stats_interval=args.stats_interval or None,
        dead_letter_stream=args.dead_letter_stream,
        dead_letter_max_bytes=args.dead_letter_max_bytes,
        metrics_port=metrics_port,
        metrics_addr=args.metrics_addr,
        health_deadline=args.health_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        embedded=not args.no_embedded,
        autopipeline=False if args.no_autopipeline else None,
        # A worker of `--workers N` may have been handed the supervisor's embedded Redis as --url.
        url_source=os.environ.get(ENV_URL_SOURCE, args.url_source),
        log_level=None,  # configured above
    )
    run_on_loop(runner.serve(), args.loop)
    return 0


async def _publish(args: argparse.Namespace) -> int:
    if args.data is None or args.data == "-":
        raw = sys.stdin.buffer.read()
        payloads = [line for line in raw.splitlines() if line] if args.lines else [raw]
    else:
        payloads = [encode_name(args.data)]
    await wait_until_reachable(resolve_url(args.url).url, args.connect_timeout)
    async with connect(args.url) as bus:
        receivers = 0
        try:
            for payload in payloads:
                if args.stream:
                    await bus.append(args.channel, payload, maxlen=args.maxlen, approximate=False)
                else:
                    receivers += await bus.publish(args.channel, payload, sharded=args.sharded)
        except OSError as exc:
            url = redact_url(resolve_url(args.url).url)
            print(f"eventbus: error: cannot publish to {url}: {exc}", file=sys.stderr)
            return 1
    if args.stream:
        print(f"appended {len(payloads)} entr{'y' if len(payloads) == 1 else 'ies'} to stream {args.channel!r}")
        return 0
    print(f"published {len(payloads)} message(s) to {args.channel!r}: {receivers} reception(s)")
    return 0


async def _check(args: argparse.Namespace) -> int:
    from eventbus._checks import check

    ensure_cwd_on_path()
    print(await check(args.url, args.connect_timeout, args.module, dead_letter_stream=args.dead_letter_stream))
    return 0


async def _streams(args: argparse.Namespace) -> int:
    from eventbus._checks import figures_json, format_table, stream_figures

    ensure_cwd_on_path()
    figures = await stream_figures(args.target, args.url, args.connect_timeout)
    print(figures_json(figures) if args.json else format_table(figures))
    return 0


def _routes(args: argparse.Namespace) -> int:
    ensure_cwd_on_path()
    router = load_target(args.target)
    rows = [("KIND", "SUBSCRIPTION", "HANDLER", "OPTIONS")]
    for subscription, handler in sorted(router.routes(), key=lambda r: (r[0].kind, r[0].name, r[1].name)):
        o = handler.options
        options = f"concurrency={o.concurrency} inbox={o.inbox_limits} overflow={o.overflow} retries={o.retries}"
        options = f"payload={describe_payload(handler)} {options}{describe_key(o.key)}"
        if not handler.is_async:
            options += " sync"
        if handler.middleware:
            # The module's and the handler's own, outermost first (global ones come from `run`).
            options += " middleware=" + ",".join(describe_middleware(m) for m in handler.middleware)
        rows.append((subscription.kind, subscription.name, handler.name, options))
    for line in aligned(rows, last_free=True):
        print(line)
    hooks = [f"startup: {h.__qualname__}" for h in router.startup] + [
        f"shutdown: {h.__qualname__}" for h in router.shutdown
    ]
    for hook in hooks:
        print(hook)
    return 0


def _docs(args: argparse.Namespace) -> int:
    from eventbus._asyncapi import document, render

    ensure_cwd_on_path()
    router = load_target(args.target)
    text = render(document(router, resolve_url(args.url).url, title=args.title, version=args.app_version), args.format)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
        print(f"wrote the AsyncAPI document of {router.name!r} to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
