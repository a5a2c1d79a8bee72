"""``python -m apps.olympics``: the producer and the report, for the two-terminal form.

    simulate [--url URL] [-n 1000] [--rate 100] [--seed 1]   post purchases, with a progress bar
    report   [--url URL] [--png chart.png]                     print the sales report
    reset    [--url URL] [--yes]                               delete the keys the app created

The listeners run elsewhere: ``python -m eventbus run apps.olympics --url URL`` (with a URL given,
they only listen). Every command takes ``--prefix PREFIX`` for data kept under a key prefix, as the
one-command demo keeps its own (``--prefix olympics-demo:``) on a Redis it did not start.

Exit codes: 0 done; 1 Redis unreachable, a PNG asked for without matplotlib, or reset declined;
2 bad usage, no listener subscribed (listeners that never ran start after whatever was posted
before them, so the orders could go unprocessed), or reset without --yes and no terminal to ask on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import eventbus
from apps.olympics.keys import Keys
from apps.olympics.producer import wait_for_listeners
from apps.olympics.progress import ProgressBar
from apps.olympics.registry import delete, tracked
from apps.olympics.report import PngUnavailable, load_report, render_report, write_png
from apps.olympics.simulator import create_events, generate_orders, simulate

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PING_TIMEOUT = 3.0
RUN_LISTENERS = "python -m eventbus run apps.olympics"


class Unreachable(Exception):
    """Redis did not answer."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m apps.olympics", description="Olympics ticket sales on eventbus.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def url_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="Redis URL (default: $EVENTBUS_URL, else redis://localhost:6379/0)")
        p.add_argument(
            "--prefix",
            default="",
            help="key prefix of the data (default: none, the tutorial's key names; the demo's own: olympics-demo:)",
        )

    sim = commands.add_parser("simulate", help="post random purchases for the listeners to process")
    url_option(sim)
    sim.add_argument("-n", "--count", type=_non_negative(int), default=1000, help="purchases to post (1000)")
    sim.add_argument(
        "--rate", type=_non_negative(float), default=100.0, help="purchases per second; 0 = as fast as possible (100)"
    )
    sim.add_argument("--seed", type=int, help="replay the same purchases (default: random, printed)")
    sim.add_argument("--concurrency", type=_positive_int, default=16, help="posts in flight at once (16)")
    sim.add_argument(
        "--wait", type=_non_negative(float), default=10.0, help="seconds to wait for the listeners to subscribe (10)"
    )
    sim.add_argument("--force", action="store_true", help="post even if no listener is subscribed")

    report = commands.add_parser("report", help="print the sales summary and the time-of-day chart")
    url_option(report)
    report.add_argument("--png", type=Path, help="also draw the charts into this PNG file (needs matplotlib)")

    reset = commands.add_parser(
        "reset", help="delete the keys the app created (recorded when it simulated); never anything else"
    )
    url_option(reset)
    reset.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = {"simulate": _simulate, "report": _report, "reset": _reset}[args.command]
    try:
        return asyncio.run(command(args))
    except Unreachable as exc:
        print(f"olympics: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130


async def _simulate(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1_000_000)
    orders = generate_orders(args.count, seed)
    url = _shown_url(args.url)
    async with eventbus.connect(args.url) as bus:
        await _ping(bus.redis, url)
        if not await wait_for_listeners(bus.redis, args.wait) and not args.force:
            print(
                f"olympics: error: no listener subscribed to 'purchase_orders' at {url} after {args.wait:g}s, "
                f"so these purchases may never be processed (listeners that ran before catch up on what was posted "
                f"while they were stopped, but a first start begins after it). Start the listeners first:\n"
                f"  {RUN_LISTENERS} --url {url}\n(or pass --force to post anyway)",
                file=sys.stderr,
            )
            return EXIT_USAGE
        keys = Keys(args.prefix)
        await create_events(bus, keys=keys)
        bar = ProgressBar(len(orders), "purchases")
        posted = await simulate(
            bus, orders, rate=args.rate, concurrency=args.concurrency, on_posted=lambda _: bar.advance(), keys=keys
        )
        bar.close()
    ceremonies = sum(1 for o in orders if o.event.endswith(" Ceremony"))
    print(f"posted {posted:,} purchases to {url} (seed {seed}; {ceremonies:,} for ceremonies)")
    return EXIT_OK


async def _report(args: argparse.Namespace) -> int:
    url = _shown_url(args.url)
    async with eventbus.connect(args.url) as bus:
        await _ping(bus.redis, url)
        report = await load_report(bus.redis, Keys(args.prefix))
    print(render_report(report, unicode=_can_print("█▏▁")))
    if args.png is not None:
        try:
            write_png(report, args.png)
        except PngUnavailable as exc:
            print(f"olympics: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"wrote {args.png}")
    return EXIT_OK


async def _reset(args: argparse.Namespace) -> int:
    url = _shown_url(args.url)
    keys = Keys(args.prefix)
    async with eventbus.connect(args.url) as bus:
        await _ping(bus.redis, url)
        names = await tracked(bus.redis, keys)
        if not names:
            print(f"nothing to delete: no key created by the app at {url} {keys.describe()}")
            return EXIT_OK
        # A server the demo's run started holds nothing else, and is gone after the run: no question.
        throwaway = keys.throwaway_marker in names
        if not args.yes and not throwaway:
            question = f"Delete the {len(names):,} key(s) the app created at {url} {keys.describe()}? [y/N] "
            if not _interactive():
                print(
                    f"olympics: error: refusing to delete {len(names):,} key(s) at {url} without confirmation, and "
                    "there is no terminal to ask on: pass --yes",
                    file=sys.stderr,
                )
                return EXIT_USAGE
            if not _confirm(question):
                print("nothing deleted")
                return EXIT_FAILED
        deleted = await delete(bus.redis, names)
    print(f"deleted {deleted:,} key(s) the app created at {url} {keys.describe()}")
    return EXIT_OK


def _interactive() -> bool:
    return sys.stdin is not None and sys.stdin.isatty()


def _confirm(question: str) -> bool:
    try:
        answer = input(question)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


async def _ping(redis: Any, url: str) -> None:
    # The client retries a refused connection for ~10 s; a person at a prompt wants to know sooner.
    try:
        async with asyncio.timeout(PING_TIMEOUT):
            await redis.ping()
    except TimeoutError:
        raise Unreachable(f"cannot reach Redis at {url}: no answer within {PING_TIMEOUT:g}s (is it running?)") from None
    except Exception as exc:  # noqa: BLE001 - any failure here means one thing to the user
        raise Unreachable(f"cannot reach Redis at {url}: {exc}") from None


def _shown_url(url: str | None) -> str:
    """The URL eventbus.connect will use, with any password hidden."""
    chosen = (
        url or os.environ.get("EVENTBUS_URL") or os.environ.get("EVENTBUS_DEFAULT_URL") or "redis://localhost:6379/0"
    )
    parts = urlsplit(chosen)
    if parts.password is None:
        return chosen
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _can_print(sample: str) -> bool:
    try:
        sample.encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
        return value

    return parse


def _positive_int(text: str) -> int:
    value = _non_negative(int)(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return int(value)
