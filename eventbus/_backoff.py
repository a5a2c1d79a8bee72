"""Exponential backoff with full jitter, for every loop that retries a connection or a command.

Full jitter (a random pause in ``[0, delay)``) keeps a fleet of processes that lost the same
server from retrying in lockstep. (A handler's own retries follow its ``backoff=`` option instead,
see :mod:`eventbus._worker`.)
"""

from __future__ import annotations

import asyncio
import random


class Backoff:
    """``await backoff.sleep()`` after a failure, ``backoff.reset()`` after a success."""

    __slots__ = ("cap", "delay", "first")

    def __init__(self, first: float = 0.1, cap: float = 5.0) -> None:
        self.first = first
        self.cap = cap
        self.delay = first

    def reset(self) -> None:
        self.delay = self.first

    def next(self) -> float:
        """The next pause, and double the bound for the one after."""
        pause = random.uniform(0, self.delay)
        self.delay = min(self.delay * 2, self.cap)
        return pause

    async def sleep(self) -> float:
        pause = self.next()
        await asyncio.sleep(pause)
        return pause
