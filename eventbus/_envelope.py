"""The wire format of requests and replies on plain pub/sub (no headers there: the payload carries them).

A request is published on the channel itself, so whoever subscribes to it (eventbus handlers,
``redis-cli SUBSCRIBE``) receives it, and PUBLISH's receiver count says whether anyone listens::

    REQUEST_MAGIC | header length (4 bytes, big-endian) | header (JSON) | body

The header is ``{"r": reply channel, "c": correlation id, "h": {headers}}`` (``h`` only when
there are headers, e.g. a trace context). The reader tells a request from a plain message by its
first byte (0, which no text or JSON payload starts with) and then the whole magic; a payload
that starts with the magic but does not parse is delivered as the plain message it is.

A reply goes to the requester's reply channel, which only the requester subscribes to::

    header length (4 bytes, big-endian) | header (JSON) | body

with the header ``{"c": correlation id, "s": "ok" | "error" | "rejected"}`` plus, for an error,
``"t"`` (the remote exception's type name) and ``"m"`` (its message, cut to
:data:`MAX_ERROR_TEXT` characters); ``"n": true`` when the handler returned None; ``h``: headers.
"""

from __future__ import annotations

from typing import Any

import orjson

from eventbus._message import Message

REQUEST_MAGIC = b"\x00EBRQ1"
_HEADER_LENGTH = 4
MAX_ERROR_TEXT = 1000  # characters of a remote error's message that travel back


class Request(Message):
    """A message that asks for a reply: the handler's return value is sent to ``reply_to``.

    ``headers``: what the requester attached (a trace context). One object for every handler the
    channel routes to, as for any message: each of them replies.
    """

    __slots__ = ("correlation", "headers", "reply_to")

    def __init__(
        self,
        channel: str,
        data: bytes,
        pattern: str | None,
        reply_to: str,
        correlation: str,
        headers: dict[str, str],
    ) -> None:
        super().__init__(channel, data, pattern)
        self.reply_to = reply_to
        self.correlation = correlation
        self.headers = headers

    def __repr__(self) -> str:
        where = f"{self.channel!r}" if self.pattern is None else f"{self.channel!r} via {self.pattern!r}"
        return f"<Request {where} {len(self.data)} bytes>"


def _framed(header: dict[str, Any], body: bytes) -> bytes:
    encoded = orjson.dumps(header)
    return len(encoded).to_bytes(_HEADER_LENGTH, "big") + encoded + body


def _unframe(data: bytes, start: int) -> tuple[dict[str, Any], bytes] | None:
    end = start + _HEADER_LENGTH
    if len(data) < end:
        return None
    size = int.from_bytes(data[start:end], "big")
    if len(data) < end + size:
        return None
    try:
        header = orjson.loads(data[end : end + size])
    except orjson.JSONDecodeError:
        return None
    if not isinstance(header, dict):
        return None
    return header, data[end + size :]


def pack_request(reply_to: str, correlation: str, body: bytes, headers: dict[str, str] | None = None) -> bytes:
    header: dict[str, Any] = {"r": reply_to, "c": correlation}
    if headers:
        header["h"] = headers
    return REQUEST_MAGIC + _framed(header, body)


def read_message(channel: str, data: bytes, pattern: str | None) -> Message:
    """The message for a payload whose first byte is 0: a :class:`Request` if it is one, else as it came."""
    if data.startswith(REQUEST_MAGIC):
        framed = _unframe(data, len(REQUEST_MAGIC))
        if framed is not None:
            header, body = framed
            reply_to, correlation, headers = header.get("r"), header.get("c"), header.get("h") or {}
            if isinstance(reply_to, str) and reply_to and isinstance(correlation, str) and isinstance(headers, dict):
                return Request(channel, body, pattern, reply_to, correlation, headers)
    return Message(channel, data, pattern)


class Reply:
    """A reply as it arrived on the reply channel, before the requester turns it into a result."""

    __slots__ = ("body", "correlation", "error_message", "error_type", "headers", "status")

    def __init__(self, header: dict[str, Any], body: bytes) -> None:
        self.correlation = str(header.get("c", ""))
        self.status = str(header.get("s", "ok"))
        self.error_type = str(header.get("t", ""))
        self.error_message = str(header.get("m", ""))
        headers = header.get("h")
        self.headers: dict[str, str] = headers if isinstance(headers, dict) else {}
        self.body = body


def pack_reply(correlation: str, body: bytes, *, headers: dict[str, str] | None = None) -> bytes:
    header: dict[str, Any] = {"c": correlation, "s": "ok"}
    if headers:
        header["h"] = headers
    return _framed(header, body)


def pack_error(correlation: str, exc: BaseException, *, rejected: bool) -> bytes:
    """An error reply: the exception's type name and message, never its traceback or locals."""
    text = str(exc)
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT] + "..."
    header = {"c": correlation, "s": "rejected" if rejected else "error", "t": type(exc).__name__, "m": text}
    return _framed(header, b"")


def read_reply(data: bytes) -> Reply | None:
    """The reply in ``data``, or None if it is not one (something else published on the reply channel)."""
    framed = _unframe(data, 0)
    if framed is None or "c" not in framed[0]:
        return None
    return Reply(*framed)
