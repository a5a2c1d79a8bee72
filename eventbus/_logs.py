"""Logging set-up shared by the CLI, the ``--workers`` supervisor and running from code.

Kept out of the CLI so that nothing has to import the CLI (and argparse) for a format string.
eventbus logs through the standard :mod:`logging` module under the ``eventbus`` logger; the
helpers here only decide where the lines go when the application has not decided itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

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


# The rule for lines that a single message can cause (a refusal, a failure and its traceback, a
# retry, a drop, a dead letter that could not be written): whoever can publish can repeat them once
# per message, so they are rate-limited per handler and reason. docs/cli.md "Logs" states the rule.
LINE_BURST = 5  # lines logged whole per handler and reason in each window
LINE_WINDOW = 60.0  # seconds; a window starts at its first line


class _Window:
    __slots__ = ("end", "left", "level", "on", "start", "suppressed", "timer")

    def __init__(self, start: float, end: float, level: int, burst: int, on: bool) -> None:
        self.start = start
        self.end = end
        self.level = level
        self.on = on  # the logger writes this level (looked up once per window, not per line)
        self.left = burst if on else 0  # lines still to be logged whole in this window
        self.suppressed = 0
        self.timer: asyncio.TimerHandle | None = None


class LineLimit:
    """Rate limit for one subject's (a handler's) lines, per reason: a flood costs a few lines.

    The first ``burst`` lines of a reason in a ``window`` are logged whole (tracebacks included);
    the rest are only counted, and when the window ends one summary line names the subject and the
    reason and says how many were not logged, at the level of the lines it stands for. The window
    ends ``window`` seconds after its first line: a timer on the running loop writes the summary
    then (without a loop, the next line of that reason does), and :meth:`flush` writes any pending
    one at once (at shutdown).

    ``allow`` is called before anything is formatted: a line held back costs a dict lookup, a
    clock read and a counter increment.
    """

    def __init__(
        self, logger: logging.Logger, subject: str, burst: int = LINE_BURST, window: float = LINE_WINDOW
    ) -> None:
        self.logger = logger
        self.subject = subject
        self.burst = burst
        self.window = window
        self._windows: dict[str, _Window] = {}

    def allow(self, reason: str, level: int = logging.WARNING) -> bool:
        """True: log this line of ``reason`` whole. False: it was counted for the window's summary
        (or the logger does not write ``level``)."""
        now = time.monotonic()
        window = self._windows.get(reason)
        if window is None or now >= window.end:
            window = self._open(reason, level, now)
        if window.left:
            window.left -= 1
            return True
        if window.on:
            window.suppressed += 1
            if window.timer is None:
                window.timer = _call_later(window.end - now, self._close, reason, window)
        return False

    def _open(self, reason: str, level: int, now: float) -> _Window:
        ended = self._windows.get(reason)
        if ended is not None:
            self._close(reason, ended)
        window = _Window(now, now + self.window, level, self.burst, self.logger.isEnabledFor(level))
        self._windows[reason] = window
        return window

    def flush(self) -> None:
        """Write the summary of every window that held lines back, now."""
        for reason, window in list(self._windows.items()):
            self._close(reason, window)

    def _close(self, reason: str, window: _Window) -> None:
        if self._windows.get(reason) is window:
            del self._windows[reason]
        if window.timer is not None:
            window.timer.cancel()
            window.timer = None
        if window.suppressed:
            self.logger.log(
                window.level,
                "%s: %d %r line(s) not logged in the last %.1fs (rate limit: the first %d per %gs are logged whole)",
                self.subject,
                window.suppressed,
                reason,
                time.monotonic() - window.start,
                self.burst,
                self.window,
            )
            window.suppressed = 0


def _call_later(delay: float, callback: Callable[[str, _Window], None], *args: Any) -> asyncio.TimerHandle | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:  # no loop (a plain thread): the next line of that reason closes the window
        return None
    return loop.call_later(delay, callback, *args)
