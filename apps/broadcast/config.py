"""The service's settings, read from the environment once at startup.

Everything an operator can tune is here, with its variable name, default and reason, so the
README table and the code cannot drift apart. Secrets are kept out of ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from apps.broadcast.publisher import channel_for

TWILIO_API_URL = "https://api.twilio.com"
# The kinds of message the service reads (``channel-<kind>``) unless BROADCAST_KINDS says otherwise.
DEFAULT_KINDS = ("broadcast", "alert", "reminder", "promotion")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class ConfigurationError(ValueError):
    """A setting is missing or malformed; the message names the variable and what to do."""


@dataclass(frozen=True)
class Settings:
    account_sid: str | None
    auth_token: str | None = field(repr=False)
    # Where Twilio's REST API lives; a proxy or a test server can stand in for it.
    base_url: str = TWILIO_API_URL
    # Log (masked) what would be sent instead of calling Twilio; credentials are then optional.
    dry_run: bool = False
    # Requests to Twilio in flight at once. Twilio limits concurrent API requests per account
    # and answers 429 beyond it; 10 stays well inside the usual allowance.
    concurrency: int = 10
    # Client-side pacing per sender number, messages per second; None (the default) sends as fast
    # as ``concurrency`` allows. Twilio queues each sender's messages itself and releases them at
    # the number's rate (for up to 10 hours of traffic), durably; pacing here would hold the same
    # queue in this process's memory, where a restart loses it. Opt in only if a sender must not
    # exceed its rate even at Twilio (``burst``: messages of one sender that may go back to back).
    rate_per_sender: float | None = None
    burst: int = 1
    # Attempts for failures that are safe to retry (429 / 20429, connection never made), with
    # full-jitter exponential backoff from retry_base up to retry_cap seconds.
    max_attempts: int = 5
    retry_base: float = 0.5
    retry_cap: float = 30.0
    # Error 21611: the sender's queue at Twilio is full (about 10 hours of its traffic). Nothing was
    # queued, so retrying is safe, but the queue drains at the sender's rate: wait long, a bounded
    # number of times (at most ~25 minutes with these defaults), then dead-letter as not sent.
    queue_full_attempts: int = 6
    queue_full_retry_base: float = 60.0
    queue_full_retry_cap: float = 600.0
    # Connecting may be retried; once the request is sent, a missing answer is an unknown outcome.
    connect_timeout: float = 5.0
    read_timeout: float = 15.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        settings = cls(
            account_sid=env.get("TWILIO_ACCOUNT_SID") or None,
            auth_token=env.get("TWILIO_AUTH_TOKEN") or None,
            base_url=_url(env, "TWILIO_BASE_URL", TWILIO_API_URL),
            dry_run=_bool(env, "BROADCAST_DRY_RUN"),
            concurrency=_int(env, "BROADCAST_CONCURRENCY", cls.concurrency),
            rate_per_sender=_float(env, "BROADCAST_RATE_PER_SENDER", 0.0) or None,
            burst=_int(env, "BROADCAST_BURST", cls.burst),
            max_attempts=_int(env, "BROADCAST_MAX_ATTEMPTS", cls.max_attempts),
            retry_base=_float(env, "BROADCAST_RETRY_BASE", cls.retry_base),
            retry_cap=_float(env, "BROADCAST_RETRY_CAP", cls.retry_cap),
            queue_full_attempts=_int(env, "BROADCAST_QUEUE_FULL_ATTEMPTS", cls.queue_full_attempts),
            queue_full_retry_base=_float(env, "BROADCAST_QUEUE_FULL_RETRY_BASE", cls.queue_full_retry_base),
            queue_full_retry_cap=_float(env, "BROADCAST_QUEUE_FULL_RETRY_CAP", cls.queue_full_retry_cap),
            connect_timeout=_float(env, "BROADCAST_CONNECT_TIMEOUT", cls.connect_timeout),
            read_timeout=_float(env, "BROADCAST_READ_TIMEOUT", cls.read_timeout),
        )
        if not settings.dry_run and not (settings.account_sid and settings.auth_token):
            missing = [n for n in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN") if not env.get(n)]
            raise ConfigurationError(
                f"broadcast: {' and '.join(missing)} not set. Export the Twilio credentials "
                "(Console > Account info), or set BROADCAST_DRY_RUN=1 to log what would be sent."
            )
        return settings


def handler_concurrency(env: Mapping[str, str] | None = None) -> int:
    """How many messages the handler works on at once (read when the module is imported).

    It is larger than ``concurrency`` on purpose: most of these are waiting for a request slot or
    for a retry (a 429, a full sender queue), which costs nothing, and a small number would let
    one sender's retries hold up every other one. The number of HTTP requests is bounded by
    ``concurrency``, not by this.
    """
    return _int(os.environ if env is None else env, "BROADCAST_MAX_PENDING", 1_000)


def service_kinds(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The kinds the service reads: ``BROADCAST_KINDS``, comma-separated (read at import).

    The service subscribes to each kind's channel by name, not to a pattern, so that it can pick
    up where it stopped after a restart: a channel is a position, a pattern is not.
    """
    raw = (os.environ if env is None else env).get("BROADCAST_KINDS", "").strip()
    if not raw:
        return DEFAULT_KINDS
    kinds = tuple(dict.fromkeys(kind.strip().removeprefix("channel-") for kind in raw.split(",") if kind.strip()))
    for kind in kinds:
        try:
            channel_for(kind)
        except ValueError as exc:
            raise ConfigurationError(f"BROADCAST_KINDS: {exc}") from None
    return kinds


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a positive integer, got {raw!r}") from None
    if value < 1:
        raise ConfigurationError(f"{name} must be a positive integer, got {raw!r}")
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a positive number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise ConfigurationError(f"{name} must be a positive number, got {raw!r}")
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"{name} must be 1/0 (or true/false), got {raw!r}")


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    parts = urlsplit(raw)
    if "@" in parts.netloc:
        # Credentials belong in TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN, never in a URL that gets logged
        # (and this error does not echo the value either).
        raise ConfigurationError(f"{name} must not contain credentials")
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigurationError(f"{name} must be an http(s) URL such as {default}, got {raw!r}")
    return raw.rstrip("/")
