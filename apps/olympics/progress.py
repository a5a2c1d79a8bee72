"""A dependency-free progress bar on stderr for the simulator."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """Redrawn in place at most ten times a second on a terminal; silent when stderr is not one
    (a log file full of carriage returns helps nobody), except for the closing summary line."""

    def __init__(self, total: int, label: str, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.label = label
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.started = time.monotonic()
        self._drawn = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.enabled and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            self.stream.write("\r" + self.line(now))
            self.stream.flush()

    def close(self) -> None:
        # On a terminal this overwrites the bar; elsewhere it is the only line written.
        self.stream.write(("\r" if self.enabled else "") + self.line(time.monotonic()) + "\n")
        self.stream.flush()

    def line(self, now: float) -> str:
        width = 30
        total = max(self.total, 1)
        filled = width * min(self.done, total) // total
        elapsed = max(now - self.started, 1e-9)
        return (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done:,}/{self.total:,} "
            f"{100 * self.done // total:3d}% {self.done / elapsed:,.0f}/s {elapsed:.1f}s"
        )
