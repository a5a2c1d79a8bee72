"""The two ways a message leaves the service: Twilio's REST API, or a dry-run log line."""

from __future__ import annotations

import logging
from typing import Protocol

from twilio.rest import Client

from apps.broadcast.config import Settings
from apps.broadcast.failures import OutcomeUnknown
from apps.broadcast.masking import mask_number
from apps.broadcast.payload import Sms
from apps.broadcast.twilio_http import BroadcastHttpClient


class Transport(Protocol):
    async def create(self, sms: Sms) -> str:
        """Hand one message over; return its message SID."""
        ...

    async def close(self) -> None: ...


class TwilioTransport:
    """twilio's async API over one pooled HTTP client (built inside the running loop)."""

    def __init__(self, settings: Settings) -> None:
        self.http = BroadcastHttpClient(
            base_url=settings.base_url,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            pool_size=settings.concurrency,
        )
        self.client = Client(settings.account_sid, settings.auth_token, http_client=self.http)

    async def create(self, sms: Sms) -> str:
        message = await self.client.messages.create_async(to=sms.to, from_=sms.from_, body=sms.body)
        sid = getattr(message, "sid", None)
        if not isinstance(sid, str) or not sid:
            # Accepted (2xx) but unidentifiable: it may well go out, so it must not be resent.
            raise OutcomeUnknown("twilio unknown outcome: success answer without a message SID; not resent")
        return sid

    async def close(self) -> None:
        await self.http.close()


class DryRunTransport:
    """Sends nothing: logs, masked, what would have been sent."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self._log = log
        self._count = 0

    async def create(self, sms: Sms) -> str:
        self._count += 1
        self._log.info(
            "dry-run: would send %d chars from %s to %s",
            len(sms.body),
            mask_number(sms.from_),
            mask_number(sms.to),
        )
        return f"DRYRUN{self._count:028d}"

    async def close(self) -> None:
        pass
