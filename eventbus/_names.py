"""Channel, pattern and stream names as Redis knows them.

Names are binary-safe in Redis: a name that is not UTF-8 decodes with its odd bytes kept as
surrogates and encodes back to exactly the same bytes.
"""

from __future__ import annotations


def encode_name(name: str) -> bytes:
    """A name as the bytes Redis knows it by (the inverse of :func:`decode_name`)."""
    return name.encode("utf-8", "surrogateescape")


def decode_name(raw: bytes) -> str:
    """A name Redis sent, as str, with undecodable bytes kept recoverable."""
    return raw.decode("utf-8", "surrogateescape")
