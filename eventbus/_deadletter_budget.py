"""Keeping a dead-letter stream under a byte budget and an entry cap.

Anyone who can publish to a subscribed channel can make a handler fail, and every failure writes a
dead letter as large as the payload, so a cap on entries alone is no bound (100,000 entries of
1 MiB is 100 GiB in a Redis without ``maxmemory``). The budget is checked against what Redis says
the stream takes, not against what this process wrote, because several processes (``--workers``,
other hosts) write to the same stream:

- after a write, at most once a second, or at once when this process wrote an eighth of the
  budget (or of the entry cap) since the last check: ``XLEN`` and ``MEMORY USAGE key SAMPLES 0``
  (every node of the stream is counted, not a sample: a sample is taken from the oldest nodes,
  which a flood of large entries behind small ones would make an underestimate);
- over the budget or the cap, ``XTRIM MAXLEN =`` to 90% of what fits (the oldest go first;
  the margin keeps a stream at the limit from being trimmed on every write). ``XTRIM`` returns
  how many entries it removed, so every trim is counted and logged (at most one line per
  :data:`TRIM_LOG_INTERVAL`).

A write that is not followed by another is checked by a timer, so a stream over its budget is
trimmed within :data:`CHECK_INTERVAL` seconds either way.

When those commands are refused (an ACL without ``+xlen +xtrim +memory|usage`` on the key) or
unknown (fakeredis), the budget falls back to what this process knows: each ``XADD`` carries
``MAXLEN ~`` the number of entries of this process's average size that fit in the budget. Redis
trims in ``XADD`` itself and does not say how much, so those trims are not counted; a warning says
so at start-up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.exceptions import NoPermissionError, ResponseError

log = logging.getLogger("eventbus.deadletter")

CHECK_INTERVAL = 1.0  # seconds between two checks of the stream's size
TRIM_TO = 0.9  # a trim keeps this share of what the budget (or the cap) allows
TRIM_LOG_INTERVAL = 10.0
# Bytes an entry costs in the stream beyond its names and values (listpack headers, the id delta,
# the entry's flags and field count), and each field beyond its name and value: for the fallback.
ENTRY_OVERHEAD = 32
FIELD_OVERHEAD = 4
MIB = 1024 * 1024


class ByteBudget:
    """The size limits of one dead-letter stream, enforced after each write.

    ``on_trim(entries)`` is called with the number of entries each trim removed.
    """

    def __init__(self, max_bytes: int, max_entries: int, on_trim: Callable[[int], None] | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.on_trim = on_trim
        self.trimmed = 0  # entries removed by this process's trims
        self.measured: bool | None = None  # None: not tried yet; False: the fallback is in use
        self.refused: str | None = None  # why the ACL lets the stream not be measured (NOPERM), if it does
        self._average = 0.0  # this process's average entry size, for the fallback
        self._bytes_since = 0
        self._adds_since = 0
        self._last_check = 0.0
        self._checking = False
        self._timer: asyncio.Task[None] | None = None
        self._unlogged = 0
        self._trims_unlogged = 0
        self._last_log = 0.0

    def reset(self) -> None:
        """Forget what was learnt about the stream (it is another stream now)."""
        self._bytes_since = self._adds_since = 0
        self._last_check = 0.0
        self.close()

    def xadd_maxlen(self) -> int | None:
        """The MAXLEN an XADD should carry: None while the stream is measured (checks trim it)."""
        if self.measured is not False:
            return None
        if self._average <= 0:
            return self.max_entries
        return max(1, min(self.max_entries, int(self.max_bytes * TRIM_TO / self._average)))

    async def added(self, redis: Any, stream: str, size: int) -> None:
        """An entry of about ``size`` bytes was written to ``stream``: check the limits if due."""
        self._average = size if self._average <= 0 else self._average * 0.9 + size * 0.1
        if self.measured is False:
            return
        self._bytes_since += size
        self._adds_since += 1
        if self._checking:
            return
        now = time.monotonic()
        if (
            now - self._last_check >= CHECK_INTERVAL
            or self._bytes_since * 8 >= self.max_bytes
            or self._adds_since * 8 >= self.max_entries
        ):
            await self.check(redis, stream)
        elif self._timer is None or self._timer.done():
            # No later write may come to trigger the check: a timer makes sure it happens.
            delay = self._last_check + CHECK_INTERVAL - now
            self._timer = asyncio.get_running_loop().create_task(self._check_later(redis, stream, delay))

    async def _check_later(self, redis: Any, stream: str, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._bytes_since or self._adds_since:
            try:
                await self.check(redis, stream)
            except Exception as exc:  # noqa: BLE001 - a background check must not end with an unseen error
                log.debug("checking the dead-letter stream %r failed: %s", stream, exc)

    async def check(self, redis: Any, stream: str) -> int:
        """Measure ``stream`` and trim it if it is over a limit; returns the entries removed.

        A refused or unknown command switches to the fallback (see the module docstring).
        """
        if self._checking or self.measured is False:
            return 0
        self._checking = True
        try:
            self._bytes_since = self._adds_since = 0
            self._last_check = time.monotonic()
            try:
                length = int(await redis.xlen(stream))
                used = int(await redis.memory_usage(stream, samples=0) or 0) if length else 0
                keep = length
                if used > self.max_bytes:
                    keep = int(length * TRIM_TO * self.max_bytes / used)
                if length > self.max_entries:
                    keep = min(keep, int(self.max_entries * TRIM_TO))
                removed = 0
                if keep < length:
                    removed = int(await redis.xtrim(stream, maxlen=keep, approximate=False))
            except ResponseError as exc:
                if not refusal(exc):
                    raise
                self.fall_back(stream, exc)
                return 0
            self.measured = True
            if removed:
                self._trimmed(stream, removed, used, length)
            return removed
        finally:
            self._checking = False

    def fall_back(self, stream: str, exc: ResponseError) -> None:
        """Keep the budget from this process's own writes: ``exc`` refused a command it needs."""
        self.measured = False
        reason = describe_error(exc)
        if not isinstance(exc, NoPermissionError):
            # fakeredis (the memory backend, the embedded fallback): nothing to fix, nothing to say.
            log.debug("the dead-letter stream %r cannot be measured (%s): budget kept from own writes", stream, reason)
            return
        self.refused = reason
        log.warning(
            "cannot measure or trim the dead-letter stream %r (%s): keeping it under %s from this process's "
            "own writes (XADD MAXLEN), uncounted; grant +xlen +xtrim +memory|usage on it for the exact budget",
            stream,
            reason,
            describe_bytes(self.max_bytes),
        )

    def _trimmed(self, stream: str, removed: int, used: int, length: int) -> None:
        self.trimmed += removed
        if self.on_trim is not None:
            self.on_trim(removed)
        self._unlogged += removed
        self._trims_unlogged += 1
        now = time.monotonic()
        if now - self._last_log < TRIM_LOG_INTERVAL:
            return
        log.warning(
            "dead-letter stream %r was over its limits (%s in %d entries; budget %s, %d entries): trimmed the "
            "oldest %d entries in %d trim(s) since the last line (%d by this process in all)",
            stream,
            describe_bytes(used),
            length,
            describe_bytes(self.max_bytes),
            self.max_entries,
            self._unlogged,
            self._trims_unlogged,
            self.trimmed,
        )
        self._unlogged = self._trims_unlogged = 0
        self._last_log = now

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def refusal(exc: ResponseError) -> bool:
    """Whether Redis refused the command itself (an ACL, or a server that does not have it)."""
    return isinstance(exc, NoPermissionError) or str(exc).lower().startswith("unknown command")


def describe_error(exc: BaseException) -> str:
    """Redis's error in one line, with the NOPERM that redis-py strips from ACL refusals."""
    first = str(exc).split("\n", 1)[0]
    return f"NOPERM {first}" if isinstance(exc, NoPermissionError) else first


def entry_size(fields: Mapping[Any, Any]) -> int:
    """About what an entry of ``fields`` takes in the stream."""
    return ENTRY_OVERHEAD + sum(len(_raw(k)) + len(_raw(v)) + FIELD_OVERHEAD for k, v in fields.items())


def _raw(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogateescape")


def describe_bytes(size: float) -> str:
    return f"{size / MIB:.1f} MiB" if size >= MIB else f"{size / 1024:.1f} KiB"
