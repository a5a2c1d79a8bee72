"""The broadcast service: every message on ``channel-<kind>`` becomes one SMS.

The channels keep a history, and the handler resumes after a restart: what was published while
the service was stopped is sent when it is back. Each message is sent once by its idempotency key
(apps.broadcast.once), however often it is delivered.

Lifecycle: the startup hook reads the settings and opens one Twilio client for the process (in
``ctx.state``); the shutdown hook closes it after eventbus has drained the in-flight sends.
Outcomes: sent (logged with its SID), skipped (its key was sent already), or ``Reject`` - eventbus
then keeps the message in its dead-letter stream with the reason (the kind of failure and the
Twilio error code).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from apps.broadcast.config import ConfigurationError, Settings, handler_concurrency, service_kinds
from apps.broadcast.failures import SendFailure
from apps.broadcast.masking import mask_number
from apps.broadcast.once import SentKeys, Skipped, shown_key
from apps.broadcast.payload import InvalidPayload, parse_sms
from apps.broadcast.publisher import channel_for
from apps.broadcast.sender import Sender
from apps.broadcast.transport import DryRunTransport, Transport, TwilioTransport
from eventbus import Channel, ConfigError, Context, Message, Reject, on, on_shutdown, on_startup

STATE_KEY = "apps.broadcast.sender"
KEYS_KEY = "apps.broadcast.sent_keys"
UNKEYED_KEY = "apps.broadcast.unkeyed_warned"


def _channels() -> list[Channel]:
    try:
        return [channel_for(kind) for kind in service_kinds()]
    except ConfigurationError as exc:
        raise ConfigError(str(exc)) from None


@on_startup
async def open_sender(ctx: Context) -> None:
    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        # eventbus prints a ConfigError as one line and exits non-zero: no traceback to wade through.
        raise ConfigError(str(exc)) from None
    transport: Transport
    if settings.dry_run:
        transport = DryRunTransport(logging.getLogger("apps.broadcast.dry_run"))
        ctx.log.warning("broadcast: DRY RUN - nothing is sent to Twilio; messages are logged, masked")
    else:
        transport = TwilioTransport(settings)
        ctx.log.info(
            "broadcast: sending through %s as account %s",
            settings.base_url,
            mask_number(settings.account_sid or ""),
        )
        host = urlsplit(settings.base_url).hostname or ""
        if settings.base_url.startswith("http://") and host not in ("127.0.0.1", "localhost", "::1"):
            ctx.log.warning("broadcast: TWILIO_BASE_URL is plain http: credentials travel in clear")
    pacing = (
        f"paced at {settings.rate_per_sender:g} messages/s per sender (burst {settings.burst})"
        if settings.rate_per_sender
        else "not paced (Twilio queues each sender's messages)"
    )
    ctx.log.info(
        "broadcast: up to %d requests at once, %s; 429s retried %d times, full sender queues (21611) %d times",
        settings.concurrency,
        pacing,
        settings.max_attempts - 1,
        settings.queue_full_attempts - 1,
    )
    ctx.state[STATE_KEY] = Sender(transport, settings)
    ctx.state[KEYS_KEY] = SentKeys(ctx.redis)


@on_shutdown
async def close_sender(ctx: Context) -> None:
    sender: Sender | None = ctx.state.pop(STATE_KEY, None)
    if sender is not None:
        await sender.close()
    keys: SentKeys | None = ctx.state.pop(KEYS_KEY, None)
    if keys is not None and keys.skipped:
        ctx.log.warning("broadcast: skipped %d message(s) whose idempotency key was already used", keys.skipped)


# resume: after a restart, send what was published while the service was stopped.
# retries=0: eventbus must never resend on its own - only the sender knows what is safe to retry.
@on(*_channels(), name="broadcast", resume=True, concurrency=handler_concurrency(), retries=0)
async def broadcast(msg: Message, ctx: Context) -> None:
    """Send one SMS. The payload is parsed here rather than by annotation: :func:`parse_sms`
    caps its size before parsing and words every error without the message's numbers or text."""
    try:
        sms = parse_sms(msg.data)
    except InvalidPayload as exc:
        raise Reject(f"invalid payload: {exc}") from None
    sender: Sender = ctx.state[STATE_KEY]
    keys: SentKeys = ctx.state[KEYS_KEY]
    if sms.key is None and not ctx.state.get(UNKEYED_KEY):
        ctx.state[UNKEYED_KEY] = True
        ctx.log.warning(
            "a message on %s has no idempotency key (a producer that does not use apps.broadcast's publisher?): "
            "such messages are sent, but nothing stops one delivered twice from being sent twice",
            msg.channel,
        )
    try:
        sent = await keys.send_once(sender, sms, ctx.log)
    except SendFailure as exc:
        raise Reject(exc.reason) from None
    if isinstance(sent, Skipped):
        ctx.log.warning(
            "skipped a message on %s to %s: its key %s was used already (%s)",
            msg.channel,
            mask_number(sms.to),
            shown_key(sms.key or ""),
            sent.meaning,
        )
        return
    ctx.log.info(
        "sent %s on %s from %s to %s (%d chars, attempt %d)",
        sent.sid,
        msg.channel,
        mask_number(sms.from_),
        mask_number(sms.to),
        len(sms.body),
        sent.attempts,
    )
