"""The message a handler receives."""

from __future__ import annotations

from typing import Any

import orjson
from mypy_extensions import mypyc_attr

from eventbus._errors import PayloadError


# Compiled with mypyc where a compiler is available (setup.py); eventbus._streams subclasses it in Python.
@mypyc_attr(allow_interpreted_subclasses=True, acyclic=True)
class Message:
    """One Pub/Sub message as Redis delivered it.

    ``pattern`` is None for a plain channel subscription and the glob for a pattern one.
    The payload stays bytes until a handler asks for ``.text`` or ``.json()``, so binary payloads
    pass through untouched and the decoding cost is paid only by handlers that want it.
    """

    # _payloads: decoded payloads by decoder (eventbus._payloads), set only when a typed handler
    # shares its type with another; left unset otherwise, so building a message costs nothing more.
    __slots__ = ("_payloads", "channel", "data", "pattern")
    _payloads: dict[Any, Any]

    def __init__(self, channel: str, data: bytes, pattern: str | None = None) -> None:
        self.channel = channel
        self.data = data
        self.pattern = pattern

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8; raises :class:`PayloadError` if it is not valid UTF-8."""
        try:
            return self.data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadError(
                f"payload on {self.channel!r} is not valid UTF-8 ({len(self.data)} bytes): {exc.reason}"
            ) from None

    def json(self) -> Any:
        """The payload parsed as JSON (orjson); raises :class:`PayloadError` if it is not JSON."""
        try:
            return orjson.loads(self.data)
        except (orjson.JSONDecodeError, RecursionError) as exc:
            # orjson >= 3.9.15 refuses nesting deeper than 1024 with JSONDecodeError.
            raise PayloadError(
                f"payload on {self.channel!r} is not valid JSON ({len(self.data)} bytes): {exc}"
            ) from None

    def __repr__(self) -> str:
        # The payload may be personal data: show its size, never its content.
        where = f"{self.channel!r}" if self.pattern is None else f"{self.channel!r} via {self.pattern!r}"
        return f"<Message {where} {len(self.data)} bytes>"


# Compiled with the dispatcher, which reads it once per message of a recoverable channel: native
# attributes there, where a Python object's would each be a lookup. eventbus._recovery subclasses it.
@mypyc_attr(allow_interpreted_subclasses=True)
class Position:
    """Where one subscription is on a recoverable channel: the history's epoch (None: no position
    yet), the last offset delivered, and while recovering the live messages that wait (else None)."""

    def __init__(self) -> None:
        self.epoch: bytes | None = None
        self.last: int = 0
        self.buffer: list[Any] | None = None
