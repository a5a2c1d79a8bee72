"""The producer side: how an alert, promotion or reminder service hands a message over.

    async with eventbus.connect() as bus:
        await publish_sms(bus, to="+5584981341213", from_="+12028165004", message="hi", kind="alert")

The message is validated here with the service's own rules, so a bad number fails in the
producer with a clear error instead of landing in the dead-letter store later.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

from apps.broadcast.payload import Sms, encode_sms, validate_sms

CHANNEL_PREFIX = "channel-"

# Kinds are plain words: no glob characters (a channel is not a pattern) and no spaces.
_KIND = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


class SupportsPublish(Protocol):
    """eventbus's ``connect()`` bus and a handler's ``ctx`` both fit."""

    async def publish(self, channel: str, data: Any) -> int: ...


def channel_for(kind: str) -> str:
    """``"alert"`` -> ``"channel-alert"`` (a full ``channel-...`` name is accepted as is)."""
    name = kind.removeprefix(CHANNEL_PREFIX)
    if not _KIND.fullmatch(name):
        raise ValueError(f"kind must be a word of letters, digits, '_', '.', ':' or '-', got {kind!r}")
    return CHANNEL_PREFIX + name


async def publish(bus: SupportsPublish, sms: Sms, kind: str = "broadcast") -> int:
    """Publish an already validated message; return how many subscribers received it.

    0 means no broadcast service was subscribed: Redis Pub/Sub keeps nothing, so the message is
    gone and the caller should treat it as not delivered.
    """
    return await bus.publish(channel_for(kind), encode_sms(sms))


async def publish_sms(bus: SupportsPublish, *, to: str, from_: str, message: str, kind: str = "broadcast") -> int:
    """Validate and publish one message; raises :class:`InvalidPayload` for a bad one."""
    return await publish(bus, validate_sms(message, from_, to), kind)
