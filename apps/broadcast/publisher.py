"""The producer side: how an alert, promotion or reminder service hands a message over.

    async with eventbus.connect() as bus:
        await publish_sms(bus, to="+5584981341213", from_="+12028165004", message="hi", kind="alert")

The message is validated here with the service's own rules, so a bad number fails in the
producer with a clear error instead of landing in the dead-letter store later. Each message gets
an idempotency key (unless the caller gives one), so that the service never sends it twice.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any, Protocol

from apps.broadcast.payload import Sms, encode_sms, new_key, validate_sms
from eventbus import Channel

CHANNEL_PREFIX = "channel-"

# How much of each SMS channel Redis keeps, so that a service stopped for a restart or a deploy
# sends what was published meanwhile (the README says how these were chosen).
HISTORY = 100_000
HISTORY_TTL = 86_400
# Kinds are plain words: no glob characters and no spaces.
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class SupportsPublish(Protocol):
    """eventbus's ``connect()`` bus and a handler's ``ctx`` both fit."""

    async def publish(self, channel: str | Channel, data: Any) -> int: ...


def channel_for(kind: str) -> Channel:
    """``"alert"`` -> the channel ``channel-alert`` (a full ``channel-...`` name is accepted as is)."""
    name = kind.removeprefix(CHANNEL_PREFIX)
    if not _KIND.fullmatch(name):
        raise ValueError(f"kind must be a word of letters, digits, '_', '.', ':' or '-', got {kind!r}")
    return Channel(CHANNEL_PREFIX + name, history=HISTORY, ttl=HISTORY_TTL)


async def publish(bus: SupportsPublish, sms: Sms, kind: str = "broadcast") -> int:
    """Publish an already validated message (with a new idempotency key if it has none); return
    how many subscribers received it.

    0 means no broadcast service was subscribed at that moment: the message waits in the
    channel's history, and a service that has run before sends it when it starts again.
    """
    if sms.key is None:
        sms = replace(sms, key=new_key())
    return await bus.publish(channel_for(kind), encode_sms(sms))


async def publish_sms(
    bus: SupportsPublish, *, to: str, from_: str, message: str, kind: str = "broadcast", key: str | None = None
) -> int:
    """Validate and publish one message; raises :class:`InvalidPayload` for a bad one.

    ``key``: the message's idempotency key (default: a new one). Give the same key when you
    publish the same message again (a retry after an error, say): the service sends it once.
    """
    return await publish(bus, validate_sms(message, from_, to, key), kind)
