"""Replaying the broadcast dead letters that are safe to replay - and only those.

``python -m eventbus dead-letters replay --all`` would also resend unknown outcomes (5xx,
timeouts), which may already have reached the person. This picks, by the reason the service
wrote, only the messages Twilio certainly did not accept (429 or no connection, retries used up),
publishes each again to its channel, and removes it from the stream.

An entry is only as trustworthy as whoever can write the dead-letter stream, so its fields never
decide where it goes: like ``dead-letters replay --module``, it is published again only if the
broadcast handler subscribes to its channel (``eventbus.replay_verdict``); anything else is left
in the stream and counted as ``refused``.

Each is published through its channel's history, as the publisher does. A message Twilio
certainly did not accept had its idempotency key released, so the service sends it again. An
unknown outcome keeps its key (it may have been delivered): :func:`resend` releases the key of one
entry, after a person has checked Twilio's message log, and publishes it again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from apps.broadcast.once import SentKeys
from apps.broadcast.payload import InvalidPayload, parse_sms
from apps.broadcast.publisher import SupportsPublish, channel_for
from apps.broadcast.service import broadcast
from eventbus import DeadLetter, DeadLetterStore, Router, replay_verdict

HANDLER = "broadcast"

# The reasons the service writes (eventbus prefixes a Reject's reason with "rejected: ").
_KINDS = (
    ("rejected: twilio not sent:", "not-sent"),
    ("rejected: twilio refused,", "permanent"),
    ("rejected: twilio unknown outcome", "unknown-outcome"),
    ("rejected: invalid payload:", "invalid-payload"),
)


def kind_of(dead: DeadLetter) -> str:
    for prefix, kind in _KINDS:
        if dead.error.startswith(prefix):
            return kind
    return "other"


@dataclass
class ReplayReport:
    replayed: int = 0
    left: Counter[str] = field(default_factory=Counter)
    undelivered: bool = False  # stopped because no broadcast service was subscribed


async def replay_not_sent(
    bus: SupportsPublish, store: DeadLetterStore, *, keep: bool = False, limit: int = 100_000
) -> ReplayReport:
    report = ReplayReport()
    handlers = Router([broadcast])
    for dead in await store.list(count=limit):
        if dead.handler != HANDLER:
            continue
        if replay_verdict(handlers, dead).refusal is not None:
            report.left["refused"] += 1  # a channel the service does not read, or a malformed entry
            continue
        kind = kind_of(dead)
        if kind != "not-sent" or report.undelivered:
            report.left[kind] += 1
            continue
        if await bus.publish(channel_for(dead.channel), dead.payload) == 0:
            # Nobody got it; keep the entry (and every later one) for the next run.
            report.undelivered = True
            report.left[kind] += 1
            continue
        report.replayed += 1
        if not keep:
            await store.delete(dead.id)
    return report


class CannotResend(Exception):
    """The entry is not one the service could send; the text says why."""


async def resend(bus: SupportsPublish, store: DeadLetterStore, entry_id: str, *, keep: bool = False) -> int:
    """Publish one dead letter again, releasing its idempotency key first; return the receivers.

    For an unknown outcome (or a refusal whose cause was fixed) that a person decided to send
    again: the key would otherwise make the service skip it as sent already.
    """
    dead = next((d for d in await store.list(count=100_000) if d.id == entry_id), None)
    if dead is None or dead.handler != HANDLER:
        raise CannotResend(f"no broadcast dead letter with id {entry_id}")
    if replay_verdict(Router([broadcast]), dead).refusal is not None:
        raise CannotResend(f"dead letter {entry_id} is not for a channel the broadcast service reads")
    try:
        sms = parse_sms(dead.payload)
    except InvalidPayload as exc:
        raise CannotResend(f"dead letter {entry_id} has an invalid payload ({exc}): it cannot be sent") from None
    if sms.key is not None:
        await SentKeys(store.redis).release(sms.key)
    receivers = await bus.publish(channel_for(dead.channel), dead.payload)
    if receivers and not keep:
        await store.delete(dead.id)
    return receivers
