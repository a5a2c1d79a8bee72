"""``python -m eventbus run MODULE --workers N``: N worker processes under one supervisor.

Each worker is an ordinary ``python -m eventbus run MODULE ...`` child. Stream consumer groups
share their entries between the workers (each entry goes to one of them); pub/sub and sharded
pub/sub handlers run in every worker, so each of their messages is handled N times.

The supervisor forwards the first SIGINT/SIGTERM to every worker as one SIGTERM (each drains its
queued work within its grace period), then waits; a second signal kills the workers at once. A
worker that dies on its own (a crash, ``kill -9``) is restarted with a growing delay, and the
entries it held are claimed by the other workers of its groups. Children run in their own process
group, so a Ctrl+C in the terminal reaches them once, through the supervisor, and on Linux they are
sent SIGTERM if the supervisor itself is killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from eventbus.logs import ENV_WORKER, ENV_WORKERS
from eventbus.logs import configure as configure_logging

log = logging.getLogger("eventbus.supervisor")

PR_SET_PDEATHSIG = 1
POLL_INTERVAL = 0.1
RESTART_MAX_DELAY = 30.0
USAGE_ERROR = 2  # the CLI's exit code for bad options and modules that cannot be loaded
STABLE_AFTER = 10.0  # a worker that ran this long before dying restarts without delay


def strip_option(argv: Sequence[str], name: str) -> list[str]:
    """``argv`` without ``name VALUE`` / ``name=VALUE``."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out


def option_value(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _die_with_parent() -> None:
    # Linux only: if the supervisor is SIGKILLed, its workers get SIGTERM instead of living on.
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restarts: int = 0
    delay: float = 0.5
    restart_at: float | None = None
    exit_codes: list[int] = field(default_factory=list)
    count: int = 1

    @property
    def label(self) -> str:
        # As the worker tags its own log lines (eventbus.logs.worker_tag): 1-based, "2/4".
        return f"{self.index + 1}/{self.count}"


class Supervisor:
    """Starts, watches, restarts and stops ``count`` worker processes.

    ``command(i)`` is the argv of worker ``i`` (0-based).
    """

    def __init__(self, command: Callable[[int], list[str]], count: int, *, grace: float = 10.0) -> None:
        if count < 1:
            raise ValueError("--workers must be at least 1")
        self.command = command
        self.workers = [_Worker(i, count=count) for i in range(count)]
        self.grace = grace
        self.signals = 0
        self.fatal: int | None = None  # set when a worker fails in a way a restart cannot fix

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            for worker in self.workers:
                self._spawn(worker)
            log.info("supervisor %d: started %d workers", os.getpid(), len(self.workers))
            while not self.signals and self.fatal is None:
                self._watch()
                time.sleep(POLL_INTERVAL)
            code = self._shutdown()
            return self.fatal if self.fatal is not None else code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals += 1
        if self.signals > 1:
            log.warning("second signal: killing the workers now")
            self._send(signal.SIGKILL)

    def _spawn(self, worker: _Worker) -> None:
        env = dict(os.environ, **{ENV_WORKER: str(worker.index), ENV_WORKERS: str(len(self.workers))})
        worker.process = subprocess.Popen(
            self.command(worker.index),
            env=env,
            process_group=0,  # a terminal's Ctrl+C reaches the workers only through us
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,  # single-threaded: safe
        )
        worker.started = time.monotonic()
        worker.restart_at = None
        log.info("worker %s started (pid %d)", worker.label, worker.process.pid)

    def _watch(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is None:
                if worker.restart_at is not None and now >= worker.restart_at:
                    worker.restarts += 1
                    self._spawn(worker)
                continue
            code = worker.process.poll()
            if code is None:
                continue
            worker.exit_codes.append(code)
            if code == USAGE_ERROR:
                # A bad option or a module that cannot load fails the same way every time.
                log.error("worker %s exited with a usage or load error (code 2): not restarting it", worker.label)
                worker.process = None
                self.fatal = USAGE_ERROR
                return
            ran = now - worker.started
            worker.delay = 0.5 if ran >= STABLE_AFTER else min(worker.delay * 2, RESTART_MAX_DELAY)
            log.warning(
                "worker %s (pid %d) exited with %s after %.1fs; restarting it in %.1fs",
                worker.label,
                worker.process.pid,
                _describe_exit(code),
                ran,
                worker.delay,
            )
            worker.process = None
            worker.restart_at = now + worker.delay

    def _send(self, sig: signal.Signals) -> None:
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(sig)

    def _shutdown(self) -> int:
        log.info("stopping %d workers (grace %.1fs; signal again to kill them at once)", len(self.workers), self.grace)
        self._send(signal.SIGTERM)
        # Each worker has its own grace period; allow for start-up and closing on top of it.
        deadline = time.monotonic() + self.grace + 10.0
        failed = 0
        for worker in self.workers:
            if worker.process is None:
                continue
            try:
                code = worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %s (pid %d) did not stop in time: killing it", worker.label, worker.process.pid)
                worker.process.kill()
                code = worker.process.wait()
            if code != 0:
                failed += 1
                log.warning("worker %s exited with %s", worker.label, _describe_exit(code))
        log.info("all workers stopped")
        return 1 if failed else 0


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"code {code}"


def supervise(args: object, argv: Sequence[str]) -> int:
    """The ``run --workers N`` command: validate once, share one Redis URL, supervise N workers."""
    from eventbus.config import ENV_URL_SOURCE, SOURCE_EMBEDDED, resolve_url
    from eventbus.embedded import EmbeddedRedis
    from eventbus.router import ensure_cwd_on_path, load_target

    configure_logging(str(getattr(args, "log_level", "info")))
    count = int(getattr(args, "workers"))  # noqa: B009 - args is an argparse namespace
    ensure_cwd_on_path()
    router = load_target(getattr(args, "target"))  # noqa: B009 - fail here, once, not in N children
    broadcast = [s.name for s, _ in router.routes() if s.kind != "stream"]
    if broadcast:
        log.warning(
            "%d pub/sub subscription(s) (%s) run in each of the %d workers: each of their messages is handled "
            "%d times. Only @on_stream groups share work between workers.",
            len(broadcast),
            ", ".join(repr(b) for b in broadcast[:3]) + (", ..." if len(broadcast) > 3 else ""),
            count,
            count,
        )
    child_args = strip_option(argv, "--workers")
    embedded: EmbeddedRedis | None = None
    resolved = resolve_url(getattr(args, "url", None))
    if not resolved.explicit and not getattr(args, "no_embedded", False) and not _answers(resolved.url):
        # One embedded Redis for all the workers, or they would not share anything.
        embedded = EmbeddedRedis().start()
        log.warning("no Redis at %s: started an embedded one at %s for the workers", resolved.url, embedded.url)
        child_args = [*strip_option(child_args, "--url"), "--url", embedded.url]
        os.environ[ENV_URL_SOURCE] = SOURCE_EMBEDDED  # inherited by the workers: their log names it
    metrics = option_value(child_args, "--metrics-port")

    def command(index: int) -> list[str]:
        argv_i = child_args
        if metrics is not None and metrics.isdigit() and int(metrics) > 0:
            # Each worker serves its own metrics, on consecutive ports.
            argv_i = [*strip_option(argv_i, "--metrics-port"), "--metrics-port", str(int(metrics) + index)]
        return [sys.executable, "-m", "eventbus", *argv_i]

    try:
        return Supervisor(command, count, grace=float(getattr(args, "grace", 10.0))).run()
    finally:
        if embedded is not None:
            embedded.stop()


def _answers(url: str) -> bool:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=0.3, socket_timeout=1.0) as client:
            return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
