"""How a send can end other than with a message SID.

The split follows one question - *could the person have received a text?* - because Twilio's
Messages API has no idempotency key: resending after an unknown outcome may text someone twice.

- :class:`NotSent`: Twilio certainly did not accept it (429 or no connection) even after
  retries. Safe to replay from the dead-letter store.
- :class:`PermanentFailure`: Twilio refused it for good (invalid number, unsubscribed, region
  disabled, ...). Replaying will fail the same way until the cause is fixed.
- :class:`OutcomeUnknown`: the request went out and no clear answer came back (5xx, timeout,
  dropped connection). Check the Twilio message log before replaying.

Every ``reason`` is safe to log: numbers are masked, bodies and credentials never included.
"""

from __future__ import annotations


class SendFailure(Exception):
    """A message could not be confirmed as sent; ``reason`` says why and what to do."""

    kind = "failed"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotSent(SendFailure):
    kind = "not-sent"


class PermanentFailure(SendFailure):
    kind = "permanent"


class OutcomeUnknown(SendFailure):
    kind = "unknown-outcome"


class ConnectFailed(Exception):
    """Transport: the connection to the API could not be made, so nothing was sent. Retryable."""


class NoAnswer(Exception):
    """Transport: the request may have reached the API but no complete response came back."""
