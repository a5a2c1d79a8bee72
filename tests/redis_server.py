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

__all__ = ["SERVICE", "RedisServer", "SentinelProcess", "acl_denials", "free_port", "port_open"]


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


SERVICE = "mymaster"  # the name the sentinels know the master by


class SentinelProcess:
    """One ``redis-server --sentinel`` watching ``master_port``, on a free port."""

    def __init__(self, master_port: int, extra: str = "") -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="eventbus-test-sentinel-")
        conf = Path(self.dir) / "sentinel.conf"  # a sentinel rewrites its config: it must be writable
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir}/sentinel.log\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 3000\n{extra}"
        )
        self.process = subprocess.Popen(["redis-server", str(conf), "--sentinel"])
        wait_for_ping(self.port, self.process, 10.0)

    @property
    def url(self) -> str:
        """eventbus's URL for the master this sentinel watches."""
        return f"redis+sentinel://127.0.0.1:{self.port}/{SERVICE}"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


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
