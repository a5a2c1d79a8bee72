"""``python -m apps.broadcast``: publish one message, publish a file of them, or run the service.

    send   --to +5584981341213 --from +12028165004 --message "..." [--kind alert]
    bulk   recipients.csv [--from ...] [--message ...] [--kind ...] [--rate 200] [--skip N]
    replay [--keep]               (republish the dead letters Twilio certainly did not accept)
    replay --id ID [--keep]       (republish one dead letter, an unknown outcome after checking
                                   Twilio's message log, say: its idempotency key is released)
    serve  [--dry-run] [eventbus run options: --url, --grace, --log-level, ...]
           (the same as: [BROADCAST_DRY_RUN=1] python -m eventbus run apps.broadcast ...)

Exit codes: 0 published; 1 bad input or Redis unreachable; 2 no broadcast service was
subscribed (the message waits in its channel's history for a service that ran before, but a
service that never ran starts after it).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import NoReturn

from redis.exceptions import RedisError

import eventbus
from apps.broadcast.masking import mask_number
from apps.broadcast.payload import InvalidPayload, Sms, validate_sms
from apps.broadcast.progress import Progress
from apps.broadcast.publisher import channel_for, publish
from apps.broadcast.ratelimit import RateLimiter
from apps.broadcast.recipients import FORMATS, Defaults, RecipientsError, load_recipients
from apps.broadcast.replay import CannotResend, replay_not_sent, resend

EXIT_OK, EXIT_INPUT, EXIT_UNDELIVERED = 0, 1, 2


class Undelivered(Exception):
    """PUBLISH reached no subscriber: no broadcast service is listening."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m apps.broadcast", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--url", help="Redis URL (default: $EVENTBUS_URL, else redis://localhost:6379/0)")
        p.add_argument("--kind", default="broadcast", help="publish to channel-KIND (default: broadcast)")

    send_cmd = sub.add_parser("send", help="publish one message")
    common(send_cmd)
    send_cmd.add_argument("--to", required=True, help="recipient, E.164 (+5584981341213)")
    send_cmd.add_argument("--from", dest="from_", required=True, help="sender number, E.164")
    send_cmd.add_argument("--message", required=True, help="text, at most 1,600 characters")

    bulk_cmd = sub.add_parser("bulk", help="publish one message per recipient in a CSV/JSON file")
    common(bulk_cmd)
    bulk_cmd.add_argument("file", type=Path)
    bulk_cmd.add_argument("--format", choices=FORMATS, help="default: from the file extension")
    bulk_cmd.add_argument("--from", dest="from_", help="sender for entries without one")
    bulk_cmd.add_argument("--message", help="text for entries without one")
    bulk_cmd.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="publish at most this many messages per second (default: as fast as Redis takes them); "
        "keep it near what the service can send so its inbox never overflows",
    )
    bulk_cmd.add_argument("--skip", type=int, default=0, help="skip the first N entries (to resume a stopped run)")
    bulk_cmd.add_argument("--no-progress", action="store_true", help="no progress bar")

    replay_cmd = sub.add_parser("replay", help="republish the dead-lettered messages that were certainly not sent")
    replay_cmd.add_argument("--url", help="Redis URL (default: $EVENTBUS_URL, else redis://localhost:6379/0)")
    replay_cmd.add_argument("--keep", action="store_true", help="leave the replayed entries in the stream")
    replay_cmd.add_argument(
        "--id", dest="entry_id", help="republish this one entry whatever its outcome, releasing its idempotency key"
    )

    serve_cmd = sub.add_parser(
        "serve",
        help="run the broadcast service; other options go to 'python -m eventbus run' (--url, --grace, ...)",
    )
    serve_cmd.add_argument("--dry-run", action="store_true", help="log (masked) what would be sent; no Twilio")
    return parser


async def send_one(url: str | None, kind: str, sms: Sms) -> int:
    async with eventbus.connect(url=url) as bus:
        receivers = await publish(bus, sms, kind)
    if receivers == 0:
        raise Undelivered(
            f"no subscriber on {channel_for(kind)}: no broadcast service reads this kind now. The message waits in "
            "the channel's history: a service that ran before sends it when it starts again, a first start does not"
        )
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
                    f"no subscriber on {channel_for(kind)}: stopped at entry {index + 1} ({sent} delivered before "
                    f"it). Entry {index + 1} waits in the channel's history, and a service that ran before sends it "
                    f"when it starts again: then rerun with --skip {index + 1} (with --skip {index} if the service "
                    "never ran here)"
                )
            sent += 1
            progress.advance()
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "serve":
        serve(args.dry_run, extra)
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        if args.command == "replay":
            if args.entry_id:
                return asyncio.run(replay_one(args.url, args.entry_id, keep=args.keep))
            return asyncio.run(replay(args.url, keep=args.keep))
        channel_for(args.kind)  # a bad --kind is an input error, before connecting
        if args.command == "send":
            sms = validate_sms(args.message, args.from_, args.to)
            receivers = asyncio.run(send_one(args.url, args.kind, sms))
            print(f"published to {channel_for(args.kind)} for {mask_number(sms.to)} ({receivers} subscriber(s))")
            return EXIT_OK
        messages = load_recipients(args.file, Defaults(args.from_, args.message), args.format)
        if not 0 <= args.skip <= len(messages):
            raise RecipientsError(f"--skip must be between 0 and {len(messages)}")
        if args.rate < 0:
            raise RecipientsError("--rate must be >= 0 (0: no limit)")
        progress = Progress(len(messages) - args.skip, "publishing", enabled=False if args.no_progress else None)
        try:
            sent = asyncio.run(
                send_many(args.url, args.kind, messages, rate=args.rate, skip=args.skip, progress=progress)
            )
        finally:
            progress.close()
        print(f"published {sent} message(s) to {channel_for(args.kind)}")
        return EXIT_OK
    except (InvalidPayload, RecipientsError, CannotResend, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Undelivered as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNDELIVERED
    except (eventbus.EventbusError, RedisError) as exc:
        # eventbus.connect() surfaces redis-py's own errors when Redis cannot be reached.
        print(f"error: Redis: {exc}", file=sys.stderr)
        return EXIT_INPUT


async def replay(url: str | None, *, keep: bool) -> int:
    async with eventbus.connect(url=url) as bus:
        report = await replay_not_sent(bus, eventbus.DeadLetterStore(bus.redis), keep=keep)
    print(f"replayed {report.replayed} message(s) that Twilio had not accepted")
    if report.left:
        left = ", ".join(f"{n} {kind}" for kind, n in sorted(report.left.items()))
        print(
            f"left in the dead-letter stream: {left}. Unknown outcomes may have been delivered: check "
            "Twilio's message log, then replay single ones with: python -m eventbus dead-letters replay "
            "--module apps.broadcast --id ID"
        )
    if report.undelivered:
        print("error: no broadcast service is subscribed; the rest were kept", file=sys.stderr)
        return EXIT_UNDELIVERED
    return EXIT_OK


async def replay_one(url: str | None, entry_id: str, *, keep: bool) -> int:
    async with eventbus.connect(url=url) as bus:
        receivers = await resend(bus, eventbus.DeadLetterStore(bus.redis), entry_id, keep=keep)
    if not receivers:
        print(
            "no broadcast service is subscribed: the entry was kept; the message waits in the channel's history "
            "and a service that ran before sends it when it starts",
            file=sys.stderr,
        )
        return EXIT_UNDELIVERED
    print(f"replayed {entry_id} with its idempotency key released")
    return EXIT_OK


def serve(dry_run: bool, eventbus_args: list[str]) -> NoReturn:
    """Become ``python -m eventbus run apps.broadcast``: its signals, logging and exit codes."""
    if dry_run:
        # The startup hook reads the environment, so the flag travels the same way as the variable.
        os.environ["BROADCAST_DRY_RUN"] = "1"
    command = [sys.executable, "-m", "eventbus", "run", "apps.broadcast", *eventbus_args]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, command)
