"""Stopping tasks that wait in redis-py, which can swallow a cancellation.

redis-py can lose the cancellation of a command in progress (redis/redis-py#2028, #2579: a read
timeout of its own that expires at the same moment turns the cancellation into that timeout), and
the task then carries on as if nothing had been asked: a reader blocked in XREADGROUP after a
server restart, the sentinel listener polling for failovers. So a stop cancels, waits a moment,
and cancels again until the task ends or a deadline passes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("eventbus")

ASK_AGAIN = 0.5  # seconds between cancellations of a task that did not stop
STOP_TIMEOUT = 5.0  # seconds to keep asking


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], timeout: float = STOP_TIMEOUT) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` until each has ended, asking again every :data:`ASK_AGAIN` seconds;
    returns those still running after ``timeout`` seconds (the caller says what it abandons)."""
    pending = {task for task in tasks if not task.done()}
    deadline = time.monotonic() + timeout
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=ASK_AGAIN)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                # Retrieved, so asyncio does not report it again at exit; these loops end by cancellation.
                log.debug("%s ended with an error while stopping", task.get_name(), exc_info=task.exception())
        if pending and time.monotonic() >= deadline:
            break
    return pending
