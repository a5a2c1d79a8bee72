"""``python -m eventbus``: run, publish, request, routes, docs, dead-letters, dashboard.

Exit codes: 0 success; 1 runtime failure (Redis unreachable, refused subscription);
2 bad usage or a handler module that cannot be loaded.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, NoReturn

from redis.exceptions import RedisError

from eventbus import __version__
from eventbus._backends import reachable, resolve_url, wait_until_reachable
from eventbus._channels import Channel
from eventbus._errors import ConfigError, EventbusError, LoadError
from eventbus._hotpath import describe as describe_hot_path
from eventbus._logs import ENV_WORKER, ENV_WORKERS
from eventbus._logs import configure as configure_logging
from eventbus._loops import LOOP_CHOICES, loop_factory
from eventbus._loops import run as run_on_loop
from eventbus._names import encode_name
from eventbus._payloads import describe_key, describe_payload
from eventbus._requests import DEFAULT_TIMEOUT
from eventbus._router import ensure_cwd_on_path, load_target
from eventbus._runner import Runner, connect
from eventbus._settings import Settings, as_options, command_options, from_options, settings_from
from eventbus._supervisor import Supervisor, receive_handover
from eventbus._tables import aligned
from eventbus._urls import (
    SOURCE_EMBEDDED,
    SOURCE_FILE_OPTION,
    SOURCE_OPTION,
    read_url_file,
    redact_url,
)
from eventbus.middleware import describe_middleware

log = logging.getLogger("eventbus.supervisor")  # the --workers messages keep their logger


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

    run = commands.add_parser("run", help="run a module of handlers until SIGINT/SIGTERM/SIGHUP")
    run.add_argument("target", help="module to load: pkg.mod or pkg.mod:attr (a Router or list of handlers)")
    add_settings(run, "run")
    loop_option(run)
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="run N worker processes under a supervisor; @on_stream groups share their work between them (1)",
    )
    # Set by the supervisor on each worker it starts, whose settings it hands over (never as options).
    run.add_argument("--as-worker", type=_worker_of, metavar="I/N", help=argparse.SUPPRESS)

    run.add_argument(
        "--reload",
        action="store_true",
        help="development only, not for production: restart when a file of the module's package changes "
        "(needs eventbus[reload])",
    )

    publish = commands.add_parser("publish", help="publish a message (DATA, or standard input)")
    publish.add_argument("channel")
    publish.add_argument("data", nargs="?", help="the payload; omitted or '-' reads standard input")
    publish.add_argument("--lines", action="store_true", help="publish each line of standard input separately")
    publish.add_argument("--sharded", action="store_true", help="SPUBLISH to a sharded channel")
    publish.add_argument("--stream", action="store_true", help="CHANNEL names a stream: append entries (XADD)")
    publish.add_argument("--maxlen", type=int, help="with --stream: trim the stream to at most this many entries")
    publish.add_argument(
        "--history",
        type=int,
        metavar="N",
        help="a recoverable channel: keep its last N messages for subscribers to recover (as Channel(history=N))",
    )
    publish.add_argument(
        "--ttl", type=float, metavar="S", help="with --history: keep the history S seconds after the last publish"
    )
    add_settings(publish, "publish")
    loop_option(publish)

    request = commands.add_parser(
        "request", help="send a request and print the first reply (exit 1 on a timeout, no responder or an error)"
    )
    request.add_argument("channel")
    request.add_argument("data", nargs="?", help="the payload; omitted or '-' reads standard input")
    request.add_argument(
        "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds to wait for the reply (%(default)s)"
    )
    request.add_argument("--sharded", action="store_true", help="a request to @on(channel, sharded=True) handlers")
    add_settings(request, "request")
    loop_option(request)

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
    add_settings(dead, "dead-letters")
    loop_option(dead)

    check = commands.add_parser(
        "check",
        help="exit 0 if Redis answers (and, with --module, the module loads and can subscribe); else 1",
        description="Checks from outside a runner: Redis answers PING (with the URL's credentials); "
        "with --module, the module loads (else exit 2), its channels and patterns can be subscribed to "
        "and its streams are streams or absent. Nothing is consumed. A running process answers "
        "/healthz and /readyz on its metrics port instead.",
    )
    check.add_argument("--module", metavar="TARGET", help="also check this handler module (pkg.mod[:attr])")
    add_settings(check, "check")
    loop_option(check)

    streams = commands.add_parser(
        "streams", help="consumer-group lag, pending entries and their age for a module's @on_stream handlers"
    )
    streams.add_argument("target", help="module whose @on_stream handlers name the streams and groups")
    streams.add_argument("--json", action="store_true", help="one JSON array instead of the table")
    add_settings(streams, "streams")
    loop_option(streams)

    dashboard = commands.add_parser(
        "dashboard",
        help="serve a web page of every process, handler, stream group and dead letter (needs eventbus[dashboard])",
        description="Reads the heartbeats every runner writes to Redis, the stream groups and the dead-letter "
        "stream. Binds to 127.0.0.1; any other address needs a token ($EVENTBUS_DASHBOARD_TOKEN or --token).",
    )
    dashboard.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    dashboard.add_argument("--port", type=int, default=8089, help="port to bind (8089)")
    dashboard.add_argument(
        "--token",
        help="the token every request must carry (default: $EVENTBUS_DASHBOARD_TOKEN; required off loopback; "
        "prefer the variable: options show in the process list)",
    )
    dashboard.add_argument(
        "--module",
        metavar="TARGET",
        action="append",
        default=[],
        help="a handler module (repeatable): replay sends entries only where its handlers read; "
        "its @payload_mask function masks payloads",
    )
    add_settings(dashboard, "dashboard")
    loop_option(dashboard)
    return parser


def add_settings(parser: argparse.ArgumentParser, command: str) -> None:
    """The options of ``command`` that are settings, each as its field in eventbus._settings describes it."""
    for offered in command_options(command):
        how = offered.option
        where: Any = parser.add_mutually_exclusive_group() if offered.name == "url" else parser
        kwargs: dict[str, Any] = {"dest": offered.name, "help": how.help.format(default=shown_default(offered.default))}
        if how.parse is None:
            kwargs |= {"action": "store_const", "const": how.const, "default": offered.default}
        else:
            # Named after the flag, as argparse names it when the flag is the field's name (--grace GRACE).
            kwargs |= {
                "metavar": how.metavar or how.flag.lstrip("-").replace("-", "_").upper(),
                "type": _argument_type(how.parse),
                "default": offered.default,
            }
        if how.repeat:
            kwargs |= {"action": "append", "default": list(offered.default)}
        where.add_argument(how.flag, *how.aliases.get(command, ()), **kwargs)
        if offered.name == "url":
            where.add_argument(
                "--url-file",
                metavar="PATH",
                help="read the Redis URL from this file (a mounted secret): keeps the password out of the process list",
            )


def shown_default(value: Any) -> str:
    """A default as help texts show it: ``10`` for 10.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    if parse in (str, int, float):
        return parse  # argparse names them in its own message: "invalid float value: 'x'"

    def checked(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


def loop_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--loop",
        default="auto",
        choices=LOOP_CHOICES,
        help="event loop: uvloop, asyncio, or auto (uvloop when it is installed; the default)",
    )


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
        if args.command == "run":
            return _run_command(args, argv)
        if args.command == "publish":
            return run_on_loop(_publish(args), args.loop)
        if args.command == "request":
            return run_on_loop(_request(args), args.loop)
        if args.command == "routes":
            return _routes(args)
        if args.command in ("check", "streams"):
            return run_on_loop(_check(args) if args.command == "check" else _streams(args), args.loop)
        if args.command == "docs":
            return _docs(args)
        if args.command == "dashboard":
            return _dashboard(args)
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


def _run_command(args: argparse.Namespace, argv: Sequence[str]) -> int:
    if args.as_worker is not None:
        return _run_worker(args, argv)  # a worker never supervises nor reloads: it has no such settings
    if args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    settings = replace(from_options(vars(args)), url_source=args.url_source)
    if args.reload:
        from eventbus._reload import run_with_reload

        configure_logging(settings.log_level or "info")
        return run_with_reload(argv, args.target, settings.grace)
    if args.workers != 1:
        return _supervise(args.target, settings, args.workers, args.loop)
    return _run(args.target, settings, args.loop)


def _run(target: str, settings: Settings, loop: str) -> int:
    if settings.log_level is not None:
        configure_logging(settings.log_level)  # before the module loads: importing it may log
    ensure_cwd_on_path()
    run_on_loop(Runner(target, settings).serve(), loop)
    return 0


def _supervise(target: str, settings: Settings, count: int, loop: str) -> int:
    """``run --workers N``: validate once, share one Redis URL, supervise N workers, hand each its settings."""
    configure_logging(settings.log_level or "info")
    resolved = resolve_url(settings.url, settings.url_source)  # a malformed URL fails before anything else
    ensure_cwd_on_path()
    router = load_target(target)  # fail here, once, not in N children
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
    if resolved.explicit:
        # Resolved once, here: each worker gets the URL itself, and where it came from for its log.
        settings = replace(settings, url=resolved.url, url_source=resolved.source)
    elif settings.connection.embedded and not reachable(resolved.url):
        # One embedded Redis for all the workers, or they would not share anything.
        embedded = EmbeddedRedis().start()
        log.warning("no Redis at %s: started an embedded one at %s for the workers", resolved.url, embedded.url)
        settings = replace(settings, url=embedded.url, url_source=SOURCE_EMBEDDED)

    def command(index: int) -> list[str]:
        return [sys.executable, "-m", "eventbus", *worker_arguments(target, index, count)]

    def handover(index: int) -> bytes:
        return worker_settings(settings, index, loop)

    try:
        return Supervisor(command, count, grace=settings.grace, handover=handover).run()
    finally:
        if embedded is not None:
            embedded.stop()


def worker_arguments(target: str, index: int, count: int) -> list[str]:
    """What ``ps`` shows of worker ``index`` (0-based) of ``count``: its module and its number, nothing else.

    Its settings (the URL and its password among them) come through the supervisor's handover
    (:func:`worker_settings`), never as arguments.
    """
    return ["run", target, "--as-worker", f"{index + 1}/{count}"]


def worker_settings(settings: Settings, index: int, loop: str) -> bytes:
    """What the supervisor hands worker ``index``: its settings (JSON) and the event loop to run them on.

    Each worker serves its own metrics, on consecutive ports (0 still picks a free one).
    """
    if settings.metrics_port:
        settings = replace(settings, metrics_port=settings.metrics_port + index)
    return json.dumps({"loop": loop, "settings": as_options(settings)}).encode()


def _run_worker(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """A worker of ``run --workers N``: everything but its module and number comes from its supervisor."""
    index, count = args.as_worker
    if list(argv) != worker_arguments(args.target, index, count):
        raise ConfigError(
            "--as-worker marks a worker that `run --workers N` started, and a worker takes its settings "
            "from its supervisor: give no other option with it"
        )
    handed = receive_handover()
    if handed is None:
        raise ConfigError("--as-worker is set by `run --workers N` for its workers, not by hand")
    try:
        given = json.loads(handed)
        settings, loop = settings_from(**given["settings"]), given["loop"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"the settings handed over by the supervisor are unreadable: {exc}") from None
    loop_factory(loop)
    os.environ[ENV_WORKER], os.environ[ENV_WORKERS] = str(index), str(count)  # the log tag: [worker 2/4]
    return _run(args.target, settings, loop)


def _dashboard(args: argparse.Namespace) -> int:
    from eventbus._dashboard import missing_extra, serve

    missing = missing_extra()
    if missing is not None:
        raise ConfigError(missing)
    run_on_loop(
        serve(
            args.url,
            host=args.host,
            port=args.port,
            token=args.token,
            modules=args.module,
            dead_letter_stream=args.dead_letter_stream,
            connect_timeout=args.connect_timeout,
        ),
        args.loop,
    )
    return 0


async def _publish(args: argparse.Namespace) -> int:
    if args.data is None or args.data == "-":
        raw = sys.stdin.buffer.read()
        payloads = [line for line in raw.splitlines() if line] if args.lines else [raw]
    else:
        payloads = [encode_name(args.data)]
    channel: str | Channel = args.channel
    if args.history is not None or args.ttl is not None:
        if args.stream:
            raise ConfigError("--history and --ttl are for channels, not with --stream (use --maxlen)")
        channel = Channel(args.channel, history=args.history or 0, ttl=args.ttl, sharded=args.sharded)
    await wait_until_reachable(resolve_url(args.url).url, args.connect_timeout)
    async with connect(args.url) as bus:
        receivers = 0
        try:
            for payload in payloads:
                if args.stream:
                    await bus.append(args.channel, payload, maxlen=args.maxlen, approximate=False)
                else:
                    receivers += await bus.publish(channel, payload, sharded=args.sharded)
        except OSError as exc:
            url = redact_url(resolve_url(args.url).url)
            print(f"eventbus: error: cannot publish to {url}: {exc}", file=sys.stderr)
            return 1
    if args.stream:
        print(f"appended {len(payloads)} entr{'y' if len(payloads) == 1 else 'ies'} to stream {args.channel!r}")
        return 0
    print(f"published {len(payloads)} message(s) to {args.channel!r}: {receivers} reception(s)")
    return 0


async def _request(args: argparse.Namespace) -> int:
    payload = sys.stdin.buffer.read() if args.data is None or args.data == "-" else encode_name(args.data)
    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    await wait_until_reachable(resolve_url(args.url).url, args.connect_timeout)
    async with connect(args.url) as bus:
        reply = await bus.request(args.channel, payload, timeout=args.timeout, sharded=args.sharded)
    # As it came: a text reply prints as text, a binary one is written as it is.
    sys.stdout.buffer.write(reply.data + (b"" if reply.data.endswith(b"\n") else b"\n"))
    sys.stdout.flush()
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
        if o.batch is not None:
            options += f" batch={o.batch.describe()}"
        if not handler.is_async:
            options += " sync"
        if handler.middleware:
            # The module's and the handler's own, outermost first (global ones come from `run`).
            options += " middleware=" + ",".join(describe_middleware(m) for m in handler.middleware)
        if subscription.recoverable:
            options += " recovers,resumes" if o.resume else " recovers"
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
