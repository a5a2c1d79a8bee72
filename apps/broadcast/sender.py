"""Sending one message: concurrency limit, optional per-sender pacing, and the retry policy.

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


@dataclass(slots=True)
class SendProgress:
    """Whether a request for the message may be at Twilio without an answer yet (the caller
    needs to know when the send is cancelled: a message never requested was certainly not sent)."""

    requesting: bool = False


class Sender:
    """Shared by every handler invocation of the process (one per app, kept in ``ctx.state``)."""

    def __init__(self, transport: Transport, settings: Settings) -> None:
        self.transport = transport
        self.settings = settings
        self._slots = asyncio.Semaphore(settings.concurrency)
        # Pacing is opt-in (see Settings.rate_per_sender). Two limiters with the same parameters.
        # The pacer is taken *before* a request slot, so a message waiting for its sender's turn
        # does not hold one of the few request slots and other senders keep going. When all slots
        # are busy, several paced messages of one sender can get a slot at the same moment; the
        # second limiter, taken with the slot held, keeps the spacing of the requests actually made
        # (normally it does not wait at all).
        rate = settings.rate_per_sender
        self._pacer = RateLimiter(rate, settings.burst) if rate else None
        self._spacer = RateLimiter(rate, settings.burst) if rate else None

    async def send(self, sms: Sms, log: Log, progress: SendProgress | None = None) -> Sent:
        """Send ``sms``; raise a :class:`SendFailure` (reason already masked) if not confirmed.

        Retries are counted separately for the two reasons Twilio gives for not accepting a
        message: too many requests (429 / 20429: ``max_attempts``, short backoff) and the sender's
        queue being full (21611: ``queue_full_attempts``, long backoff).
        """
        settings = self.settings
        if progress is None:
            progress = SendProgress()
        # rate_limited also counts connections never made: both are short-lived, max_attempts.
        attempt = queue_full = rate_limited = 0
        while True:
            attempt += 1
            if self._pacer is not None:
                await self._pacer.wait(sms.from_)
            async with self._slots:
                if self._spacer is not None:
                    await self._spacer.wait(sms.from_)
                progress.requesting = True
                try:
                    return Sent(await self.transport.create(sms), attempt)
                except ConnectFailed as exc:
                    progress.requesting = False
                    why = str(exc)
                    full = False
                except NoAnswer as exc:
                    raise OutcomeUnknown(
                        f"twilio unknown outcome: {exc}; not resent automatically - "
                        "check the Twilio message log before replaying"
                    ) from None
                except (TwilioRestException, TwilioServiceException) as exc:
                    progress.requesting = False  # Twilio answered
                    if not policy.is_retryable(exc):
                        raise policy.failure_for(exc) from None
                    full = policy.is_queue_full(exc)
                    why = f"{'sender queue full' if full else 'rate limited'}, {policy.describe(exc)}"
                except SendFailure:
                    raise
                except Exception as exc:
                    # Anything unforeseen happened after the request may have gone out.
                    raise OutcomeUnknown(
                        f"twilio unknown outcome: unexpected {type(exc).__name__}: "
                        f"{redact_numbers(str(exc))}; not resent automatically"
                    ) from exc
            if full:
                queue_full += 1
                tries, limit = queue_full, settings.queue_full_attempts
                base, cap = settings.queue_full_retry_base, settings.queue_full_retry_cap
            else:
                rate_limited += 1
                tries, limit = rate_limited, settings.max_attempts
                base, cap = settings.retry_base, settings.retry_cap
            if tries >= limit:
                raise NotSent(f"twilio not sent: {why}; gave up after {attempt} attempts - safe to replay")
            delay = backoff_delay(tries, base, cap)
            log.warning(
                "not sent to %s (%s); retrying in %.2fs (attempt %d; %d of %d for this reason)",
                mask_number(sms.to),
                why,
                delay,
                attempt + 1,
                tries + 1,
                limit,
            )
            await asyncio.sleep(delay)

    async def close(self) -> None:
        await self.transport.close()
