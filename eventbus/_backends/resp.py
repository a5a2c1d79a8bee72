"""The few RESP2 details the subscription connection needs beyond hiredis's parser."""

from __future__ import annotations

from collections.abc import Iterable

from eventbus._names import encode_name

# "sunsubscribe" arrives unasked when a cluster slot moves; the sharded subscriber handles it.
PUSH_KINDS = frozenset({b"message", b"pmessage", b"smessage", b"sunsubscribe"})


def _as_bytes(arg: bytes | str | int) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, str):
        return encode_name(arg)
    return str(arg).encode("ascii")


def pack_command(*args: bytes | str | int) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _as_bytes(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def chunks(items: Iterable[str], size: int) -> Iterable[list[str]]:
    """Split long SUBSCRIBE argument lists so no single command is huge."""
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
