"""Private redis-server processes, one per measurement, so no run inherits another's state.

The shared server on :6379 is never touched: other things use it, and a benchmark must be able
to raise its output-buffer limits and flood it without disturbing anyone.
"""

from __future__ import annotations

import contextlib
import ctypes
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from types import TracebackType

from benchmarks.resp import RawClient


def die_with_parent() -> None:
    """Linux: have the kernel kill this child if the suite dies, so nothing is left running."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def free_port() -> int:
    """A loopback port nobody listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A throw-away ``redis-server`` on a free loopback port, without persistence."""

    def __init__(self, extra_args: tuple[str, ...] = ()) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._dir = tempfile.mkdtemp(prefix="eventbus-bench-redis-")
        self.log_path = f"{self._dir}/redis.log"
        self._proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
                self._dir,
                "--loglevel",
                "warning",
                # Kept so a scenario can tell whether Redis dropped a client (it logs that as a warning).
                "--logfile",
                self.log_path,
                # The 10,000-channel scenario and FastStream's connection per subscriber need room.
                "--maxclients",
                "20000",
                *extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=die_with_parent,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} exited with {self._proc.returncode}")
            try:
                with self.client() as c:
                    if c.call("PING") == b"PONG":
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not answer within {timeout}s")
            time.sleep(0.02)

    def client(self) -> RawClient:
        return RawClient("127.0.0.1", self.port)

    def unlimited_pubsub_buffers(self) -> None:
        """Let a stopped or slow subscriber fall behind without Redis disconnecting it.

        The default ``pubsub 32mb 8mb 60`` would cut a SIGSTOPped consumer while we publish its
        backlog; the point of the drain method is to measure only the consumer's reading speed.
        """
        with self.client() as c:
            c.call("CONFIG", "SET", "client-output-buffer-limit", "pubsub 0 0 0")

    def config(self, name: str) -> str:
        """One setting's current value, as CONFIG GET reports it."""
        with self.client() as c:
            reply = c.call("CONFIG", "GET", name)
        return reply[1].decode() if len(reply) >= 2 else ""

    def output_buffer_disconnects(self) -> int:
        """How many clients Redis has closed for exceeding their client-output-buffer-limit.

        redis-server 7.0 has no counter for it (INFO gained one later), but it logs each one at
        warning level: "Client ... scheduled to be closed ASAP for overcoming of output buffer limits."
        """
        try:
            with open(self.log_path, errors="replace") as f:
                return sum(1 for line in f if "output buffer limits" in line)
        except OSError:
            return 0

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def redis_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    for part in out.split():
        if part.startswith("v="):
            return part[2:]
    return out.strip() or "unknown"
