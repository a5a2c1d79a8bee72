"""The dead-letter store: messages that a handler could not or would not process.

A capped Redis stream (``eventbus:dead-letter`` by default), so dead letters survive a restart of
the consumer, can be inspected with any Redis client (``XRANGE``) and replayed with
``python -m eventbus dead-letters replay``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from eventbus.codec import encode_name
from eventbus.message import Message

if TYPE_CHECKING:
    from redis.asyncio import Redis

DEFAULT_STREAM = "eventbus:dead-letter"
DEFAULT_MAXLEN = 100_000
log = logging.getLogger("eventbus.deadletter")


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream: the handler, where the message came from, its payload,
    the error and the number of attempts; ``stream`` is set for a stream entry."""

    id: str
    handler: str
    channel: str
    pattern: str | None
    payload: bytes
    error: str
    attempts: int
    ts: float
    stream: str | None = None  # set for a stream entry: replay appends it there again


class DeadLetterStore:
    """Appends to and reads from the dead-letter stream through a redis.asyncio client."""

    def __init__(self, redis: Redis, stream: str = DEFAULT_STREAM, maxlen: int = DEFAULT_MAXLEN) -> None:
        self.redis: Redis = redis
        self.stream = stream
        self.maxlen = maxlen

    async def add(
        self, handler: str, msg: Message, error: str, attempts: int, extra: dict[str, Any] | None = None
    ) -> bool:
        """Keep ``msg``; returns False (and logs) if Redis itself refused, so the caller goes on.

        ``extra`` adds fields (a stream entry's ``stream``, ``group`` and ``entry_id``).
        """
        # Any: redis-py's xadd wants its own invariant key/value union, which a str-keyed dict is not.
        fields: dict[Any, Any] = {
            "handler": handler,
            # Channel names are binary-safe: the dispatcher decoded them with surrogateescape, so
            # encoding them back the same way keeps any byte string (and replays to the same channel).
            "channel": _wire(msg.channel),
            "pattern": _wire(msg.pattern or ""),
            "payload": msg.data,
            "error": error[:4000].encode("utf-8", "backslashreplace"),
            "attempts": attempts,
            "ts": f"{time.time():.6f}",
            **(extra or {}),
        }
        try:
            await self.redis.xadd(self.stream, fields, maxlen=self.maxlen, approximate=True)
        except Exception as exc:  # noqa: BLE001 - the message is already lost; say so loudly
            log.error(
                "could not dead-letter a message of handler %s on %r (%s): %s",
                handler,
                msg.channel,
                type(exc).__name__,
                exc,
            )
            return False
        return True

    async def list(self, count: int = 100, start: str = "-") -> list[DeadLetter]:
        """Up to ``count`` entries, oldest first, from the entry id ``start`` on."""
        entries = await self.redis.xrange(self.stream, min=start, max="+", count=count) or []
        return [self._parse(entry_id, fields or {}) for entry_id, fields in entries]

    async def delete(self, *ids: str) -> int:
        """Remove the entries with these ids; returns how many there were."""
        return int(await self.redis.xdel(self.stream, *ids)) if ids else 0

    @staticmethod
    def _parse(entry_id: Any, fields: dict[Any, Any]) -> DeadLetter:
        def text(key: str, errors: str = "replace") -> str:
            value = fields.get(key.encode(), fields.get(key, b""))
            return value.decode("utf-8", errors) if isinstance(value, bytes) else str(value)

        payload = fields.get(b"payload", fields.get("payload", b""))
        return DeadLetter(
            id=entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id),
            handler=text("handler"),
            channel=text("channel", "surrogateescape"),
            pattern=text("pattern", "surrogateescape") or None,
            payload=payload if isinstance(payload, bytes) else str(payload).encode(),
            error=text("error"),
            attempts=int(text("attempts") or 0),
            ts=float(text("ts") or 0),
            stream=text("stream", "surrogateescape") or None,
        )


_wire = encode_name
