"""A per-key rate limiter (messages per second for each sender number).

It is the generic cell rate algorithm: each key has a theoretical arrival time (TAT); a call may
go at ``TAT - (burst - 1) * interval`` and pushes the TAT one interval on. Callers *reserve* a slot
and sleep until it, so waiters are served in arrival order without polling, and in any window of
``w`` seconds at most ``burst + w * rate`` calls go through per key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self._interval = 1.0 / rate
        self._tolerance = (burst - 1) * self._interval
        self._clock = clock
        self._tat: dict[str, float] = {}

    def reserve(self, key: str) -> float:
        """Take the next slot for ``key``; return how long to wait for it (0 if it is now)."""
        now = self._clock()
        tat = max(self._tat.get(key, now), now)
        start = max(now, tat - self._tolerance)
        self._tat[key] = tat + self._interval
        if len(self._tat) > 1024:
            self._forget_idle(now)
        return start - now

    async def wait(self, key: str) -> None:
        """Reserve the next slot for ``key`` and sleep until it."""
        delay = self.reserve(key)
        if delay > 0:
            await asyncio.sleep(delay)

    def _forget_idle(self, now: float) -> None:
        # A key whose TAT has passed behaves exactly like an unknown key: drop it, so a stream of
        # one-off senders cannot grow the table without bound.
        for key in [k for k, tat in self._tat.items() if tat <= now]:
            del self._tat[key]
