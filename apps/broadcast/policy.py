"""Which Twilio API errors may be retried.

Only answers that prove the message was *not* accepted are retried: HTTP 429 / error 20429 (too
many requests: back off briefly), and error 21611 (the sender's queue at Twilio is full: retry
much later, when Twilio has sent some of it). Any other 4xx is Twilio's considered refusal - 21211 invalid 'To', 21610
unsubscribed recipient, 21408 region not enabled, 20003 bad credentials - and will not change on
its own. A 5xx says nothing certain about whether the message was queued, so it is an unknown
outcome and is never resent automatically.
"""

from __future__ import annotations

from typing import Protocol

from apps.broadcast.failures import OutcomeUnknown, PermanentFailure, SendFailure
from apps.broadcast.masking import redact_numbers

RATE_LIMITED_CODE = 20429
QUEUE_FULL_CODE = 21611


class ApiError(Protocol):
    """What twilio's TwilioRestException and TwilioServiceException have in common."""

    status: int
    code: int | None


def is_retryable(error: ApiError) -> bool:
    return error.status == 429 or error.code == RATE_LIMITED_CODE or is_queue_full(error)


def is_queue_full(error: ApiError) -> bool:
    return error.code == QUEUE_FULL_CODE


def describe(error: ApiError) -> str:
    """``error 21211 (HTTP 400): The 'To' number +5584*****1213 is not valid`` - masked."""
    # TwilioRestException has .msg; TwilioServiceException has .detail and .title.
    text = getattr(error, "msg", None) or getattr(error, "detail", None) or getattr(error, "title", None)
    # twilio prefixes the API's message with its own generic sentence; keep only the API's part.
    text = str(text or "").removeprefix("Unable to create record: ").strip()
    code = error.code if error.code is not None else "?"
    head = f"error {code} (HTTP {error.status})"
    return f"{head}: {redact_numbers(text)}" if text else head


def failure_for(error: ApiError) -> SendFailure:
    """The final verdict on a non-retryable API error."""
    if error.status >= 500:
        return OutcomeUnknown(
            f"twilio unknown outcome, {describe(error)}; not resent automatically - "
            "check the Twilio message log before replaying"
        )
    return PermanentFailure(f"twilio refused, {describe(error)}; not retried")
