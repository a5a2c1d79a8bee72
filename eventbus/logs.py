"""Logging set-up shared by the CLI, the ``--workers`` supervisor and running from code.

Kept out of the CLI so that nothing has to import the CLI (and argparse) for a format string.
eventbus logs through the standard :mod:`logging` module under the ``eventbus`` logger; the
helpers here only decide where the lines go when the application has not decided itself.
"""

from __future__ import annotations

import logging
import os
import sys
import time

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
LEVELS = ("debug", "info", "warning", "error")

# Set by the supervisor in each worker process it starts (0-based index, and the count).
ENV_WORKER = "EVENTBUS_WORKER"
ENV_WORKERS = "EVENTBUS_WORKERS"


def parse_level(value: str) -> str:
    """A ``--log-level`` value in any case (``DEBUG``, ``Info``); ValueError names the choices."""
    level = value.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"invalid log level {value!r}: use one of {', '.join(LEVELS)} (any case)")
    return level


def worker_tag() -> str | None:
    """``worker 2/4`` in the second of four worker processes (1-based, as people count), else None."""
    index, count = os.environ.get(ENV_WORKER), os.environ.get(ENV_WORKERS)
    if index is None or count is None or not index.isdigit() or not count.isdigit():
        return None
    return f"worker {int(index) + 1}/{int(count)}"


def log_format() -> str:
    """The CLI's format, with the worker tag in a worker process so N interleaved logs stay apart."""
    tag = worker_tag()
    if tag is None:
        return LOG_FORMAT
    return LOG_FORMAT.replace("%(name)s", f"[{tag}] %(name)s")


def application_configured() -> bool:
    """True when the application has set up logging itself (handlers on the root or eventbus logger)."""
    return bool(logging.getLogger().handlers or logging.getLogger("eventbus").handlers)


def configure(level: str | int = "info") -> bool:
    """Log like the CLI: eventbus's lines (and the application's) to standard error at ``level``.

    Does nothing, and returns False, when the application has configured logging already: its
    handlers, levels and format are its own business.
    """
    if application_configured():
        return False
    if isinstance(level, str):
        level = parse_level(level).upper()
    logging.basicConfig(level=level, format=log_format(), stream=sys.stderr)
    return True


class Every:
    """Rate limit for log lines that could flood: at most one per ``interval`` seconds per key.

    ``due(key)`` returns the number of events since the last line (0: stay quiet), so the line
    that is written can say how many it stands for.
    """

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._last: dict[object, float] = {}
        self._count: dict[object, int] = {}

    def due(self, key: object = None) -> int:
        count = self._count.get(key, 0) + 1
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._count[key] = count
            return 0
        self._last[key] = now
        self._count[key] = 0
        return count
