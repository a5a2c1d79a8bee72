"""``python -m apps.broadcast``: publish one message, publish a file of them, or run the service.

    send   --to +5584981341213 --from +12028165004 --message "..." [--kind alert]
    bulk   recipients.csv [--from ...] [--message ...] [--kind ...] [--rate 200] [--skip N]
    serve  [--dry-run]            (the same as: python -m eventbus run apps.broadcast)

Exit codes: 0 published; 1 bad input or Redis unreachable; 2 no broadcast service was
subscribed, so a message was not delivered (Pub/Sub keeps nothing for absent subscribers).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

import eventbus
from apps.broadcast.masking import mask_number
from apps.broadcast.payload import InvalidPayload, Sms, validate_sms
from apps.broadcast.progress import Progress
from apps.broadcast.publisher import channel_for, publish
from apps.broadcast.ratelimit import RateLimiter
from apps.broadcast.recipients import FORMATS, Defaults, RecipientsError, load_recipients

EXIT_OK, EXIT_INPUT, EXIT_UNDELIVERED = 0, 1, 2


class Undelivered(Exception):
    """PUBLISH reached no subscriber: no broadcast service is listening."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m apps.broadcast", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="Redis URL (default: $EVENTBUS_URL, else redis://localhost:6379/0)")
        p.add_argument("--kind", default="broadcast", help="publish to channel-KIND (default: broadcast)")

    send = sub.add_parser("send", help="publish one message")
    common(send)
    send.add_argument("--to", required=True, help="recipient, E.164 (+5584981341213)")
    send.add_argument("--from", dest="from_", required=True, help="sender number, E.164")
    send.add_argument("--message", required=True, help="text, at most 1,600 characters")

    bulk = sub.add_parser("bulk", help="publish one message per recipient in a CSV/JSON file")
    common(bulk)
    bulk.add_argument("file", type=Path)
    bulk.add_argument("--format", choices=FORMATS, help="default: from the file extension")
    bulk.add_argument("--from", dest="from_", help="sender for entries without one")
    bulk.add_argument("--message", help="text for entries without one")
    bulk.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish at most this many messages per second (default: as fast as Redis takes them); "
        "keep it near what the service can send so its inbox never overflows",
    )
    bulk.add_argument("--skip", type=int, default=0, help="skip the first N entries (to resume a stopped run)")
    bulk.add_argument("--no-progress", action="store_true", help="no progress bar")

    serve = sub.add_parser("serve", help="run the broadcast service (python -m eventbus run apps.broadcast)")
    serve.add_argument("--url", help="Redis URL (default: $EVENTBUS_URL, else redis://localhost:6379/0)")
    serve.add_argument("--dry-run", action="store_true", help="log (masked) what would be sent; no Twilio")
    serve.add_argument("--grace", type=float, default=10.0, help="seconds to finish in-flight sends on stop")
    serve.add_argument("--log-level", default="info")
    return parser


async def send_one(url: str | None, kind: str, sms: Sms) -> int:
    async with eventbus.connect(url=url) as bus:
        receivers = await publish(bus, sms, kind)
    if receivers == 0:
        raise Undelivered(f"no subscriber on {channel_for(kind)}: the message was not delivered")
    return receivers


async def send_many(
    url: str | None, kind: str, messages: list[Sms], *, rate: float, skip: int, progress: Progress
) -> int:
    """Publish ``messages[skip:]`` in order; stop at the first one nobody received."""
    pacer = RateLimiter(rate) if rate > 0 else None
    sent = 0
    async with eventbus.connect(url=url) as bus:
        for index in range(skip, len(messages)):
            if pacer is not None:
                await pacer.wait("bulk")
            if await publish(bus, messages[index], kind) == 0:
                raise Undelivered(
                    f"no subscriber on {channel_for(kind)}: entry {index + 1} and the ones after it were "
                    f"not delivered ({sent} were). Start the service, then rerun with --skip {index}"
                )
            sent += 1
            progress.advance()
    return sent


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return serve(args)
        channel_for(args.kind)  # a bad --kind is an input error, before connecting
        if args.command == "send":
            sms = validate_sms(args.message, args.from_, args.to)
            receivers = asyncio.run(send_one(args.url, args.kind, sms))
            print(f"published to {channel_for(args.kind)} for {mask_number(sms.to)} ({receivers} subscriber(s))")
            return EXIT_OK
        messages = load_recipients(args.file, Defaults(args.from_, args.message), args.format)
        if not 0 <= args.skip <= len(messages):
            raise RecipientsError(f"--skip must be between 0 and {len(messages)}")
        progress = Progress(len(messages) - args.skip, "publishing", enabled=False if args.no_progress else None)
        try:
            sent = asyncio.run(
                send_many(args.url, args.kind, messages, rate=args.rate, skip=args.skip, progress=progress)
            )
        finally:
            progress.close()
        print(f"published {sent} message(s) to {channel_for(args.kind)}")
        return EXIT_OK
    except (InvalidPayload, RecipientsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Undelivered as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNDELIVERED
    except eventbus.EventbusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT


def serve(args: argparse.Namespace) -> int:
    if args.dry_run:
        # The startup hook reads the environment, so the flag travels the same way as the variable.
        os.environ["BROADCAST_DRY_RUN"] = "1"
    eventbus.run("apps.broadcast", url=args.url, grace=args.grace, log_level=args.log_level)
    return EXIT_OK
