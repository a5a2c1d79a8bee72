"""The exceptions eventbus raises, in one place.

    EventbusError
    ├── ConfigError          bad handler options, bad URL, conflicting settings
    │   └── LoadError        a handler module cannot be loaded (not found, no handlers, duplicates)
    ├── ConnectError         Redis did not answer within the retry period
    ├── SubscribeError       Redis refused a subscription (e.g. an ACL forbids the channel)
    ├── PayloadError         a message's payload is not valid UTF-8 / JSON / within the size cap
    └── RequestError         a request got no reply (see bus.request)
        ├── NoResponderError      nobody subscribes to the channel (PUBLISH reached no one)
        ├── RequestTimeoutError   no reply within the timeout (also a TimeoutError)
        ├── RequestInterruptedError  the reply connection was lost while waiting
        └── RemoteError           the responder raised: its type's name and message
            └── RemoteRejected    ... and what it raised was Reject
    Reject                   raised by a handler: do not retry, dead-letter the message
    BatchFailed              raised by a batch handler: only these messages of the batch failed

Lower-level errors (redis-py, OSError) are re-raised as these at the runner's boundary so that
the CLI can print one readable line and pick an exit code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


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


class BatchFailed(Exception):
    """Raise from a batch handler when only some messages of its batch failed.

    ``failed`` names them by their position in the list the handler received: a collection of
    positions (each failed with ``error``), or a mapping from position to that message's own
    exception. The other messages count as handled. Only the failed ones are retried (together,
    with the handler's ``retries`` and ``backoff``) and, after the last attempt, dead-lettered one by
    one with their error; one whose error is a :class:`Reject` is dead-lettered at once.

        raise BatchFailed({3: Reject("no such customer"), 7: TimeoutError("upstream")})
        raise BatchFailed([3, 7], "the upstream refused them")
    """

    def __init__(
        self, failed: Iterable[int] | Mapping[int, BaseException], error: BaseException | str | None = None
    ) -> None:
        if isinstance(failed, Mapping):
            errors = dict(failed)
        else:
            if isinstance(failed, (str, bytes)):
                raise TypeError(f"BatchFailed takes the positions of the failed messages, not {type(failed).__name__}")
            default = error if isinstance(error, BaseException) else Exception(error or "failed in its batch")
            errors = dict.fromkeys(failed, default)
        for position, exc in errors.items():
            if isinstance(position, bool) or not isinstance(position, int) or position < 0:
                raise TypeError(f"BatchFailed positions are integers >= 0 (indexes into the batch), got {position!r}")
            if not isinstance(exc, BaseException):
                raise TypeError(f"BatchFailed maps each position to an exception, got {exc!r} for {position}")
        super().__init__(f"{len(errors)} message(s) of the batch failed" + (f": {error}" if error else ""))
        self.errors: dict[int, BaseException] = errors


class RequestError(EventbusError):
    """A request (``bus.request``, ``ctx.request``) did not get a reply it could return."""


class NoResponderError(RequestError):
    """Nobody subscribes to the request's channel: PUBLISH reached no subscriber."""

    def __init__(self, channel: str) -> None:
        super().__init__(f"no responder on {channel!r}: nothing subscribes to it")
        self.channel = channel


class RequestTimeoutError(RequestError, TimeoutError):
    """No reply arrived within the request's timeout."""

    def __init__(self, channel: str, timeout: float) -> None:
        super().__init__(f"no reply on {channel!r} within {timeout:g}s")
        self.channel = channel
        self.timeout = timeout


class RequestInterruptedError(RequestError):
    """The connection that receives replies was lost while the request waited: its reply may be lost."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(f"request on {channel!r} interrupted: the reply connection was lost ({reason})")
        self.channel = channel


class RemoteError(RequestError):
    """The responder's handler raised: ``type_name`` and ``remote_message`` say what (never its traceback)."""

    def __init__(self, channel: str, type_name: str, remote_message: str) -> None:
        super().__init__(f"the responder on {channel!r} failed: {type_name}: {remote_message}")
        self.channel = channel
        self.type_name = type_name
        self.remote_message = remote_message


class RemoteRejected(RemoteError):
    """The responder's handler raised :class:`Reject`: ``remote_message`` is its reason."""
