"""Running ``python -m eventbus`` as a real subprocess, reading its log as it goes."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
