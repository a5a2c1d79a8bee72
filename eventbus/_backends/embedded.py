"""An embedded Redis for runs with nothing configured: try it out with no setup at all.

A ``redis-server`` child on a free loopback port when the binary exists (real Redis semantics),
else fakeredis's TCP server in a thread. Either lives exactly as long as the run: the child is
signalled when its runner dies, even of SIGKILL (:mod:`eventbus._children`).
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from eventbus._children import spawn

log = logging.getLogger("eventbus.embedded")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_args(binary: str, port: int, directory: str, *extra: str) -> list[str]:
    """A private, loopback-only redis-server that persists nothing (also used by the test suite)."""
    return [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
        "--dir", directory, *extra,
    ]  # fmt: skip


def wait_for_ping(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 10.0) -> None:
    """Block until the server on ``port`` answers PING; RuntimeError if its process exits first
    or ``timeout`` passes. No client-level retries: this loop is the retry policy."""
    deadline = time.monotonic() + timeout
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        while True:
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"redis-server on port {port} exited with code {process.returncode}")
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Redis on port {port} did not answer within {timeout:.0f}s") from None
                time.sleep(0.02)
    finally:
        client.close()


class EmbeddedRedis:
    """A private Redis server; ``url`` is where publishers in other shells can reach it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.kind = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._tcp_server: Any = None
        self._thread: threading.Thread | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> EmbeddedRedis:
        """Launch and wait until it answers (blocking)."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the server without waiting for it.

        Call it on a thread that lives as long as the run (the event loop's): on Linux the
        ``redis-server`` child is signalled when the thread that started it exits.
        """
        binary = shutil.which("redis-server")
        if binary:
            self._dir = tempfile.TemporaryDirectory(prefix="eventbus-redis-")
            self._process = spawn(
                redis_server_args(
                    binary, self.port, self._dir.name, "--protected-mode", "yes", "--loglevel", "warning"
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.kind = "redis-server"
            return
        import fakeredis

        self._tcp_server = fakeredis.TcpFakeServer(("127.0.0.1", self.port), server_type="redis")
        self._thread = threading.Thread(target=self._tcp_server.serve_forever, daemon=True, name="fakeredis")
        self._thread.start()
        self.kind = "fakeredis"

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the server answers PING; stopped and RuntimeError if it does not."""
        try:
            wait_for_ping(self.port, self._process, timeout)
        except RuntimeError:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._tcp_server is not None:
            self._tcp_server.shutdown()
            self._tcp_server.server_close()
            self._tcp_server = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
