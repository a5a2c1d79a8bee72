"""``run --reload``: restart the runner when a file of the handler module's package changes.

For development only. This process never imports the handlers: it watches the files (with
watchfiles, the optional ``eventbus[reload]`` extra) and runs ``python -m eventbus run ...``
(the same arguments without ``--reload``) as a child. On a change it stops the child as SIGTERM
does, so the child finishes its queued work within ``--grace`` and runs its shutdown hooks, then
starts a new one that imports the edited code. A child that fails to start (a syntax error) is
reported and restarted on the next change.

SIGINT, SIGTERM and SIGHUP are forwarded to the child, which runs in its own process group so that
a Ctrl-C in the terminal reaches it once (through us), not twice: a second signal would make it
exit without draining, as it does when run directly. If this process is killed, the child is sent
SIGTERM (:mod:`eventbus._children`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from eventbus._children import spawn
from eventbus._errors import ConfigError, LoadError
from eventbus._router import ensure_cwd_on_path, parse_target
from eventbus._runner import stop_signals

log = logging.getLogger("eventbus.reload")

KILL_AFTER = 5.0  # seconds past the child's own grace period before it is killed


def watched_paths(target: str) -> tuple[list[Path], Callable[[Path], bool]]:
    """The directories to watch for ``target`` (``pkg.mod[:attr]``) and which files in them count.

    A module inside a package: the whole top-level package (handlers import their siblings). A
    top-level module: only its own file (not everything else in the working directory).
    """
    module, _ = parse_target(target)  # a file path or an empty attribute: the same one line as `run`
    top = module.split(".", 1)[0]
    ensure_cwd_on_path()
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: finds without importing
    except (ImportError, ValueError) as exc:
        raise LoadError(f"cannot find module {top!r} to watch: {exc}") from None
    if spec is None:
        raise LoadError(f"module {top!r} not found (is it on sys.path? cwd is added)")
    if spec.submodule_search_locations:
        return [Path(p) for p in spec.submodule_search_locations], lambda path: True
    if spec.origin is None or not os.path.exists(spec.origin):
        raise LoadError(f"module {top!r} has no source file to watch")
    source = Path(spec.origin).resolve()
    return [source.parent], lambda path: path.resolve() == source


def child_arguments(argv: Sequence[str]) -> list[str]:
    """The ``run`` arguments for the child: the same, without ``--reload``."""
    return [arg for arg in argv if arg != "--reload"]


class Reloader:
    def __init__(self, argv: Sequence[str], target: str, grace: float) -> None:
        try:
            import watchfiles  # noqa: F401 - checked here: without it, one line, exit 2
        except ImportError:
            raise ConfigError("--reload needs watchfiles: pip install 'eventbus[reload]'") from None
        self.command = [sys.executable, "-m", "eventbus", *child_arguments(argv)]
        self.paths, self.accept = watched_paths(target)
        self.grace = grace
        self.child: subprocess.Popen[bytes] | None = None
        self.stop = threading.Event()
        self.reported_exit = False

    def start_child(self) -> None:
        # Its own process group: a terminal's Ctrl-C reaches only us, and we forward it once.
        self.child = spawn(self.command, process_group=0)
        self.reported_exit = False

    def stop_child(self, sig: signal.Signals = signal.SIGTERM) -> int | None:
        child = self.child
        if child is None:
            return None
        if child.poll() is None:
            child.send_signal(sig)
            try:
                child.wait(self.grace + KILL_AFTER)
            except subprocess.TimeoutExpired:
                log.warning("reload: the runner did not stop within %.0fs; killing it", self.grace + KILL_AFTER)
                child.kill()
                child.wait()
        return child.returncode

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signum)  # the child drains (a second signal: it exits at once)
        self.stop.set()

    def run(self) -> int:
        from watchfiles import DefaultFilter, watch

        default = DefaultFilter()

        def accept(change: object, path: str) -> bool:
            return default(change, path) and self.accept(Path(path))  # type: ignore[arg-type]

        for sig in stop_signals():
            signal.signal(sig, self._on_signal)
        logging.getLogger("watchfiles").setLevel(logging.WARNING)  # we say what changed ourselves
        log.warning(
            "reload: watching %s; the runner restarts when a file changes (development only, not for production)",
            ", ".join(map(str, self.paths)),
        )
        self.start_child()
        for changes in watch(
            *self.paths,
            watch_filter=accept,
            stop_event=self.stop,
            debounce=400,
            rust_timeout=500,
            yield_on_timeout=True,
            raise_interrupt=False,
        ):
            if self.stop.is_set():
                break
            if not changes:
                self._report_exit()
                continue
            names = sorted({_shown(path) for _, path in changes})
            log.warning("reload: %s changed; restarting the runner", ", ".join(names[:5]))
            self.stop_child()
            if self.stop.is_set():
                break
            self.start_child()
        return self._finish()

    def _report_exit(self) -> None:
        child = self.child
        if child is not None and not self.reported_exit and child.poll() is not None:
            self.reported_exit = True
            log.warning("reload: the runner exited with code %d; waiting for a change to restart it", child.returncode)

    def _finish(self) -> int:
        # The signal was forwarded already: wait for the drain, then report the child's exit code.
        child = self.child
        if child is None:
            return 0
        try:
            child.wait(self.grace + KILL_AFTER)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return child.returncode if child.returncode >= 0 else 128 - child.returncode


def _shown(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def run_with_reload(argv: Sequence[str], target: str, grace: float) -> int:
    """``run --reload``: watch, run the runner as a child, restart it on changes; its exit code."""
    return Reloader(argv, target, grace).run()
