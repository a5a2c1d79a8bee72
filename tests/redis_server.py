"""Private redis-server processes for the tests: each on a free port, killable and restartable."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import redis

from eventbus._backends.embedded import free_port, redis_server_args, wait_for_ping

__all__ = ["RedisServer", "acl_denials", "free_port", "port_open"]


class RedisServer:
    """One redis-server child process; ``url`` stays the same across restarts."""

    def __init__(self, port: int | None = None, extra_args: list[str] | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (bash .ci/run installs it)")
        self.binary = binary
        self.port = port or free_port()
        self.extra_args = extra_args or []
        self.dir = tempfile.mkdtemp(prefix="eventbus-test-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        log = str(Path(self.dir) / "redis.log")
        self.process = subprocess.Popen(
            redis_server_args(self.binary, self.port, self.dir, "--logfile", log, *self.extra_args)
        )
        self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            wait_for_ping(self.port, self.process, timeout)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {self.log()}") from None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing connections cleanly."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = Path(self.dir) / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on the port (no client retries involved)."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def acl_denials(client: redis.Redis) -> list[tuple[str, str, str]]:
    """What the server's ACL refused, oldest first: (user, command, what was refused: the command,
    a key or a channel), from ACL LOG."""
    entries = client.acl_log()
    return [(e["username"], e["client-info"]["cmd"], e["object"]) for e in reversed(entries)]
