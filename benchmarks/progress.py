"""A one-line-per-measurement progress display with elapsed time and an estimate of what is left.

On a terminal the line of the running measurement is shown while it runs and rewritten with its
figure when it ends; in a log (CI, a pipe) only finished lines are written.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m:d}:{s:02d}"


class Progress:
    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.tty = sys.stdout.isatty()
        self._label = ""

    def _prefix(self) -> str:
        elapsed = time.monotonic() - self.start
        eta = f" ~{_clock(elapsed / self.done * (self.total - self.done))} left" if self.done else ""
        return f"[{self.done + 1:>3}/{self.total} {_clock(elapsed)}{eta}]"

    def begin(self, label: str) -> None:
        self._label = f"{self._prefix()} {label}"
        if self.tty:
            sys.stdout.write(f"\r\033[K{self._label} …")
            sys.stdout.flush()

    def end(self, outcome: str) -> None:
        line = f"{self._label}  {outcome}"
        sys.stdout.write(f"\r\033[K{line}\n" if self.tty else f"{line}\n")
        sys.stdout.flush()
        self.done += 1

    def note(self, text: str) -> None:
        sys.stdout.write(f"{text}\n")
        sys.stdout.flush()
