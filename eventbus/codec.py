"""Turning what a user publishes into the bytes that go on the wire."""

from __future__ import annotations

from typing import Any

import orjson

from eventbus.errors import PayloadError


def encode_payload(data: Any) -> bytes:
    """bytes as they are, str as UTF-8, numbers as their decimal text, anything else as JSON.

    Numbers are sent as text (not JSON) because that is what ``redis-cli PUBLISH ch 42`` and
    redis-py send, so a handler sees the same bytes whoever published.
    """
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode("utf-8")
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, bool):
        # bool is an int subclass; JSON's true/false is the unsurprising reading.
        return b"true" if data else b"false"
    if isinstance(data, (int, float)):
        return repr(data).encode("ascii")
    try:
        return orjson.dumps(data)
    except TypeError as exc:
        raise PayloadError(f"cannot publish a {type(data).__name__}: {exc}") from None
