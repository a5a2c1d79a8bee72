"""The exceptions eventbus raises, in one place.

    EventbusError
    ├── ConfigError          bad handler options, bad URL, conflicting settings
    │   └── LoadError        a handler module cannot be loaded (not found, no handlers, duplicates)
    ├── ConnectError         Redis did not answer within the retry period
    ├── SubscribeError       Redis refused a subscription (e.g. an ACL forbids the channel)
    └── PayloadError         a message's payload is not valid UTF-8 / JSON / within the size cap
    Reject                   raised by a handler: do not retry, dead-letter the message

Lower-level errors (redis-py, OSError) are re-raised as these at the runner's boundary so that
the CLI can print one readable line and pick an exit code.
"""

from __future__ import annotations


class EventbusError(Exception):
    """Base class of every error eventbus raises on its own account."""


class ConfigError(EventbusError):
    """Invalid configuration: handler options, URLs, command-line values."""


class LoadError(ConfigError):
    """A handler module or target could not be turned into a router."""


class ConnectError(EventbusError):
    """Redis could not be reached within the bounded retry period."""


class SubscribeError(EventbusError):
    """Redis refused a SUBSCRIBE/PSUBSCRIBE (for example, an ACL forbids the channel)."""


class PayloadError(EventbusError, ValueError):
    """A payload could not be decoded as the handler asked (text, JSON) or is too large."""


class Reject(Exception):
    """Raise from a handler to refuse a message for good.

    The message is not retried; it is dead-lettered with ``reason`` and counted as rejected.
    Use it for input that will never succeed (an invalid payload, a permanent upstream error).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
