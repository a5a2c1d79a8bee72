"""Test helpers that write a recoverable channel's history the way the publish script does."""

from __future__ import annotations

from typing import Any

import redis

from eventbus._history import history_keys


def _next_id(last_id: bytes, offset: int | None) -> bytes:
    epoch, _, _ = last_id.partition(b"-")
    return epoch + (b"-*" if offset is None else b"-%d" % offset)


def append_unpublished(client: redis.Redis, channel: str, payload: bytes, offset: int | None = None) -> int:
    """Append ``payload`` to ``channel``'s history without publishing it (a message subscribers never
    got), in its current epoch, at the next offset or at ``offset`` (those between never existed),
    with the master's top key moved as the script moves it; its offset."""
    stream, top = history_keys(channel)
    [(last_id, _)] = client.xrevrange(stream, count=1)
    added = int(client.xadd(stream, {"d": payload}, id=_next_id(last_id, offset)).partition(b"-")[2])
    client.set(top, added)
    return added


async def append_unpublished_async(client: Any, channel: str, payload: bytes, offset: int | None = None) -> int:
    """:func:`append_unpublished` through an asyncio client (a cluster's, say)."""
    stream, top = history_keys(channel)
    [(last_id, _)] = await client.xrevrange(stream, count=1)
    added = int((await client.xadd(stream, {"d": payload}, id=_next_id(last_id, offset))).partition(b"-")[2])
    await client.set(top, added)
    return added
