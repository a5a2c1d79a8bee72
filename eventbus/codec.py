"""Turning what a user publishes into the bytes that go on the wire."""

from __future__ import annotations

from typing import Any

import orjson

from eventbus.errors import PayloadError
from eventbus.payloads import encode_default


def encode_payload(data: Any) -> bytes:
    """bytes as they are, str as UTF-8, numbers as their decimal text, anything else as JSON
    (typed objects included: msgspec Structs, pydantic models, dataclasses).

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
        # Typed objects (msgspec Structs, pydantic models) go through the codecs that decode them
        # (eventbus.payloads); orjson serializes dataclasses by itself.
        return orjson.dumps(data, default=encode_default)
    except TypeError as exc:
        raise PayloadError(f"cannot publish a {type(data).__name__}: {exc}") from None


# Channel, pattern and stream names are binary-safe in Redis: a name that is not UTF-8 decodes
# with its odd bytes kept as surrogates and encodes back to exactly the same bytes.
def encode_name(name: str) -> bytes:
    """A name as the bytes Redis knows it by (the inverse of :func:`decode_name`)."""
    return name.encode("utf-8", "surrogateescape")


def decode_name(raw: bytes) -> str:
    """A name Redis sent, as str, with undecodable bytes kept recoverable."""
    return raw.decode("utf-8", "surrogateescape")


def stream_fields(data: Any) -> dict[str, Any]:
    """The fields XADD stores: a flat dict as it is, any other payload encoded in ``data``."""
    if isinstance(data, dict):
        if not data:
            raise PayloadError("a stream entry needs at least one field")
        fields: dict[str, Any] = {}
        for key, value in data.items():
            if not isinstance(key, str) or not isinstance(value, (str, bytes, int, float)) or isinstance(value, bool):
                raise PayloadError(
                    f"stream fields must map str to str, bytes or numbers; field {key!r} is a {type(value).__name__} "
                    "(wrap nested data: append(stream, {'data': orjson.dumps(obj)}))"
                )
            fields[key] = value
        return fields
    return {"data": encode_payload(data)}
