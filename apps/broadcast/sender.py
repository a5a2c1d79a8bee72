"""Sending one message: concurrency limit, per-sender rate limit, and the retry policy.

Retries happen here (not in eventbus) because only this layer knows which failures are safe to
repeat; the handler is declared with ``retries=0`` so nothing else resends a message.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from twilio.base.exceptions import TwilioRestException

from apps.broadcast import policy
from apps.broadcast.backoff import backoff_delay
from apps.broadcast.config import Settings
from apps.broadcast.failures import ConnectFailed, NoAnswer, NotSent, OutcomeUnknown, SendFailure
from apps.broadcast.masking import mask_number, redact_numbers
from apps.broadcast.payload import Sms
from apps.broadcast.ratelimit import RateLimiter
from apps.broadcast.transport import Transport

try:  # twilio >= 9.9 reports RFC 9457 problem responses with a separate class.
    from twilio.base.exceptions import TwilioServiceException
except ImportError:  # pragma: no cover - older twilio
    TwilioServiceException = TwilioRestException

Log = logging.Logger | logging.LoggerAdapter[logging.Logger]


@dataclass(frozen=True, slots=True)
class Sent:
    sid: str
    attempts: int


class Sender:
    """Shared by every handler invocation of the process (one per app, kept in ``ctx.state``)."""

    def __init__(self, transport: Transport, settings: Settings) -> None:
        self.transport = transport
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        # Two limiters with the same parameters. The pacer is taken *before* a request slot, so a
        # message waiting for its sender's turn does not hold one of the few request slots and
        # other senders keep going. When all slots are busy, several paced messages of one sender
        # can get a slot at the same moment; the second limiter, taken with the slot held, keeps
        # the spacing of the requests actually made (normally it does not wait at all).
        self._pacer = RateLimiter(settings.rate_per_sender, settings.burst)
        self._spacer = RateLimiter(settings.rate_per_sender, settings.burst)

    async def send(self, sms: Sms, log: Log) -> Sent:
        """Send ``sms``; raise a :class:`SendFailure` (reason already masked) if not confirmed."""
        attempts = self.settings.max_attempts
        for attempt in range(1, attempts + 1):
            await self._pacer.wait(sms.from_)
            async with self._slots:
                await self._spacer.wait(sms.from_)
                try:
                    return Sent(await self.transport.create(sms), attempt)
                except ConnectFailed as exc:
                    why = str(exc)
                except NoAnswer as exc:
                    raise OutcomeUnknown(
                        f"twilio unknown outcome: {exc}; not resent automatically - "
                        "check the Twilio message log before replaying"
                    ) from None
                except (TwilioRestException, TwilioServiceException) as exc:
                    if not policy.is_retryable(exc):
                        raise policy.failure_for(exc) from None
                    why = f"rate limited, {policy.describe(exc)}"
                except SendFailure:
                    raise
                except Exception as exc:
                    # Anything unforeseen happened after the request may have gone out.
                    raise OutcomeUnknown(
                        f"twilio unknown outcome: unexpected {type(exc).__name__}: "
                        f"{redact_numbers(str(exc))}; not resent automatically"
                    ) from exc
            if attempt == attempts:
                break
            delay = backoff_delay(attempt, self.settings.retry_base, self.settings.retry_cap)
            log.warning(
                "not sent to %s (%s); retrying in %.2fs (attempt %d of %d)",
                mask_number(sms.to),
                why,
                delay,
                attempt + 1,
                attempts,
            )
            await asyncio.sleep(delay)
        raise NotSent(f"twilio not sent: {why}; gave up after {attempts} attempts - safe to replay")

    async def close(self) -> None:
        await self.transport.close()
