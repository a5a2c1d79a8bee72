"""Sending each message once, by its idempotency key, whatever delivers it again.

A message can reach the service twice: its producer publishes it again after an error, or the
service, restarted after a crash, handles again what it had handled just before (eventbus resumes
a handler from its last saved position). Twilio has no idempotency key, so the service keeps one:
before the request, ``SET broadcast:sms-key:<key> sending NX EX`` records the key atomically; a
message whose key is already recorded is skipped (logged, masked, and counted). Once Twilio has
answered, the record says how it ended:

- accepted: ``sent <SID>``, kept until it expires;
- certainly not accepted (429s or no connection until the retries ran out, a refusal such as an
  invalid number): released, so that a replay of the dead letter (or a republish) sends it;
- unknown (5xx, no answer in time): kept, ``unknown``. The message may have reached the person,
  so nothing sends it again by itself: check Twilio's log, then ``python -m apps.broadcast
  replay --id ID`` releases the key and publishes the dead letter again.

The crash window: a process that dies after recording the key and before Twilio answered leaves
``sending`` behind, and the message, handled again after the restart, is skipped. That is the
safe side for SMS (at most once for a recorded key): a text may be missing, never doubled. The
skip is logged at WARNING with the key's state, so it can be found and resent by hand. A stop
that abandons a message still waiting for its first request or for a retry releases its key.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from apps.broadcast.failures import NotSent, OutcomeUnknown, PermanentFailure
from apps.broadcast.masking import redact_numbers
from apps.broadcast.payload import Sms
from apps.broadcast.publisher import HISTORY_TTL
from apps.broadcast.sender import Sender, SendProgress, Sent

KEY_PREFIX = "broadcast:sms-key:"
# Longer than the channels' history lives, so that a message handled again after a restart still
# finds its key; twice as long, for a restart that comes late.
KEY_TTL = 2 * HISTORY_TTL
SENDING, UNKNOWN = "sending", "unknown"

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


def key_name(key: str) -> str:
    return KEY_PREFIX + key


def shown_key(key: str) -> str:
    """The key as logs show it: a number inside it masked, like any number in a log line."""
    return redact_numbers(key)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A message not sent because its key was recorded already; ``state`` is the record's value."""

    state: str

    @property
    def meaning(self) -> str:
        if self.state.startswith("sent "):
            return f"sent as {self.state.removeprefix('sent ')}"
        if self.state == UNKNOWN:
            return "an earlier attempt's outcome is unknown and was dead-lettered; see Twilio's message log"
        if self.state == SENDING:
            return (
                "in doubt: another attempt is in progress, or was cut off before Twilio answered (a crash); "
                "see Twilio's message log"
            )
        return self.state


class SentKeys:
    """The record of the keys sent or being sent, in Redis (shared by every service process)."""

    def __init__(self, redis: Any, ttl: int = KEY_TTL) -> None:
        self.redis = redis
        self.ttl = ttl
        self.skipped = 0  # messages skipped by this process because their key was recorded

    async def send_once(self, sender: Sender, sms: Sms, log: Log) -> Sent | Skipped:
        """Send ``sms`` unless its key is recorded; raise the sender's :class:`SendFailure`."""
        if sms.key is None:
            return await sender.send(sms, log)
        name = key_name(sms.key)
        if not await self.redis.set(name, SENDING, nx=True, ex=self.ttl):
            self.skipped += 1
            state = await self.redis.get(name)
            return Skipped(state.decode() if isinstance(state, bytes) else str(state or "expired since"))
        progress = SendProgress()
        try:
            sent = await sender.send(sms, log, progress)
        except (NotSent, PermanentFailure):
            await self.redis.delete(name)
            raise
        except OutcomeUnknown:
            await self.redis.set(name, UNKNOWN, xx=True, keepttl=True)
            raise
        except asyncio.CancelledError:
            if not progress.requesting:
                await self._release_quietly(name, log)
            raise
        await self.redis.set(name, f"sent {sent.sid}", xx=True, keepttl=True)
        return sent

    async def release(self, key: str) -> bool:
        """Forget that ``key`` was sent, so that its message can be sent again."""
        return bool(await self.redis.delete(key_name(key)))

    async def _release_quietly(self, name: str, log: Log) -> None:
        # The message was abandoned (a stop ran out of grace) before any request for it went out:
        # without its key, the restarted service sends it.
        try:
            await asyncio.wait_for(self.redis.delete(name), 1.0)
        except Exception as exc:  # noqa: BLE001 - the key then stays: at most once, as documented
            log.warning("could not release an abandoned message's key (%s): it will be skipped", type(exc).__name__)
