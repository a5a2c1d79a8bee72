"""Running ``python -m eventbus`` as a real subprocess, reading its log as it goes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The SIGHUP tests: a child inherits an ignored SIGHUP (pytest run under nohup), and then rightly keeps it.
hangups_reach_children = pytest.mark.skipif(
    signal.getsignal(signal.SIGHUP) == signal.SIG_IGN, reason="SIGHUP is ignored here (nohup?), and so in children"
)
NOT_LOCAL_ADDR = "192.0.2.1"  # TEST-NET-1 (RFC 5737): on no interface of any machine, so never bindable


class EventbusProcess:
    def __init__(
        self, args: list[str], env: dict[str, str], command: list[str] | None = None, cwd: Path = ROOT
    ) -> None:
        # ``command``: run something else than ``python -m eventbus`` (a script that runs from code).
        self.process = subprocess.Popen(
            [*(command or [sys.executable, "-m", "eventbus"]), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.output)
            if match:
                return match
            if self.process.poll() is not None:
                time.sleep(0.1)  # let the reader catch the last lines
                match = re.search(pattern, self.output)
                if match:
                    return match
                raise AssertionError(f"process exited ({self.process.returncode}) before {pattern!r}:\n{self.output}")
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.output}")

    def signal(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float = 20.0) -> int:
        code = self.process.wait(timeout)
        self._reader.join(2)
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def run_eventbus(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m eventbus ARGS`` to its end, from the repository root, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT
    )


# Processes by /proc (Linux): who is whose child, and whether a process is gone.
needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="reads /proc (Linux)")


def _stat(pid: int) -> tuple[str, str, int] | None:
    """(command name, state, parent pid) of ``pid``, None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    name, rest = stat[stat.index("(") + 1 : stat.rindex(")")], stat[stat.rindex(")") + 2 :].split()
    return name, rest[0], int(rest[1])


def children(pid: int, name: str | None = None) -> list[int]:
    """The live child processes of ``pid`` (those whose command is ``name``, if given)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[2] == pid and stat[1] != "Z" and name in (None, stat[0]):
                found.append(int(entry))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid``: children, their children, and so on."""
    below = children(pid)
    return below + [d for child in below for d in descendants(child)]


def gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie that no one reaped yet counts as exited)."""
    stat = _stat(pid)
    return stat is None or stat[1] in ("Z", "X")


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
