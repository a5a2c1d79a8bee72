"""``python -m eventbus run MODULE --workers N``: N worker processes under one supervisor.

Each worker is a ``python -m eventbus run MODULE --as-worker I/N`` child whose settings the
supervisor hands over through a pipe that only the child inherits (:func:`receive_handover`), as
FastStream's multi-process supervisor hands its children the parsed arguments: nothing is added to
or edited in the user's arguments, no secret (a URL's password) appears in a child's argv or
environment, and a worker has no ``--workers`` setting to act on, so it never supervises in turn.
Stream consumer groups
share their entries between the workers (each entry goes to one of them); pub/sub and sharded
pub/sub handlers run in every worker, so each of their messages is handled N times.

The supervisor forwards the first SIGINT/SIGTERM/SIGHUP to every worker as one SIGTERM (each
drains its queued work within its grace period), then waits; a second signal kills the workers at
once. A worker that dies on its own (a crash, ``kill -9``) is restarted with a growing delay, and
the entries it held are claimed by the other workers of its groups. Children run in their own
process group, so a Ctrl+C in the terminal reaches them once, through the supervisor, and they are
sent SIGTERM if the supervisor itself is killed (:mod:`eventbus._children`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from eventbus._children import spawn
from eventbus._errors import ConfigError
from eventbus._runner import stop_signals

log = logging.getLogger("eventbus.supervisor")

POLL_INTERVAL = 0.1
RESTART_MAX_DELAY = 30.0
USAGE_ERROR = 2  # the CLI's exit code for bad options and modules that cannot be loaded
# In a worker's environment: the file descriptor it reads its handed-over settings from.
ENV_HANDOVER_FD = "EVENTBUS_WORKER_SETTINGS_FD"
STABLE_AFTER = 10.0  # a worker that ran this long before dying restarts without delay


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
        # As the worker tags its own log lines (eventbus._logs.worker_tag): 1-based, "2/4".
        return f"{self.index + 1}/{self.count}"


class Supervisor:
    """Starts, watches, restarts and stops ``count`` worker processes.

    ``command(i)`` is the argv of worker ``i`` (0-based); it must tell the worker that it is one
    (the CLI's hidden ``--as-worker I/N``). ``handover(i)``, if given, is what worker ``i`` reads
    from the pipe its environment names (:data:`ENV_HANDOVER_FD`): its settings, written anew at
    each (re)start.
    """

    def __init__(
        self,
        command: Callable[[int], list[str]],
        count: int,
        *,
        grace: float = 10.0,
        handover: Callable[[int], bytes] | None = None,
    ) -> None:
        if count < 1:
            raise ValueError("--workers must be at least 1")
        self.command = command
        self.handover = handover
        self.workers = [_Worker(i, count=count) for i in range(count)]
        self.grace = grace
        self.signals = 0
        self.fatal: int | None = None  # set when a worker fails in a way a restart cannot fix

    def run(self) -> int:
        previous = {sig: signal.signal(sig, self._on_signal) for sig in stop_signals()}
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
        if self.handover is None:
            worker.process = self._start(worker)
        else:
            # The read end goes to this child alone (pipes are not inherited unless passed).
            reader, writer = os.pipe()
            try:
                worker.process = self._start(
                    worker, env={**os.environ, ENV_HANDOVER_FD: str(reader)}, pass_fds=(reader,)
                )
            except BaseException:
                os.close(writer)
                raise
            finally:
                os.close(reader)
            try:
                with open(writer, "wb") as pipe:
                    pipe.write(self.handover(worker.index))
            except BrokenPipeError:
                pass  # the worker died before reading: _watch reports its exit
        worker.started = time.monotonic()
        worker.restart_at = None
        log.info("worker %s started (pid %d)", worker.label, worker.process.pid)

    def _start(self, worker: _Worker, **popen: Any) -> subprocess.Popen[bytes]:
        # SIGTERM if the supervisor dies, even of SIGKILL; spawned from the main thread, which
        # lives as long as the supervisor (eventbus._children).
        return spawn(
            self.command(worker.index),
            process_group=0,  # a terminal's Ctrl+C reaches the workers only through us
            **popen,
        )

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
            if code == -signal.SIGTERM:
                # Our SIGTERM came before the worker had installed its handlers (it was still
                # starting, after a restart): it held no work, since a runner handles the signal
                # before it reads anything. A clean stop, not a failure.
                log.info("worker %s stopped while still starting", worker.label)
            elif code != 0:
                failed += 1
                log.warning("worker %s exited with %s", worker.label, _describe_exit(code))
        log.info("all workers stopped")
        return 1 if failed else 0


def receive_handover() -> bytes | None:
    """In a worker: what its supervisor handed over (None outside a worker), read once.

    The variable is removed so that nothing this worker starts takes itself for a worker.
    """
    fd = os.environ.pop(ENV_HANDOVER_FD, None)
    if fd is None:
        return None
    try:
        with open(int(fd), "rb") as pipe:
            return pipe.read()
    except (ValueError, OSError) as exc:
        raise ConfigError(
            f"cannot read the settings handed over by the supervisor (${ENV_HANDOVER_FD}={fd}): {exc}"
        ) from None


def _describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return signal.Signals(-code).name
    return f"code {code}"
