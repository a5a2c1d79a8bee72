"""Child processes that do not outlive their parent, even a parent that is SIGKILLed.

Used for the ``--workers`` supervisor's workers and for the embedded ``redis-server``: a parent
killed with SIGKILL (or by the OOM killer) runs no cleanup, and without this its children would
live on under PID 1, holding ports and memory.

On Linux the child asks the kernel for ``death_signal`` when its parent dies
(``prctl(PR_SET_PDEATHSIG)``, set between fork and exec, kept across exec). The kernel's "parent"
is the *thread* that forked the child: call :func:`spawn` from a thread that lives as long as the
child should (the event loop's thread, the main thread), never from a pool thread such as
``asyncio.to_thread``'s, whose exit would signal the child early.

Where prctl does not exist (macOS), a small watchdog process beside the child polls for the
parent's death and then signals the child; it exits by itself once the child is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any

PR_SET_PDEATHSIG = 1
WATCHDOG_INTERVAL = 0.5  # seconds between the fallback watchdog's checks

# The fallback watchdog: argv is PARENT_PID CHILD_PID SIGNAL. It runs in its own process group,
# deaf to the terminal's SIGINT and SIGHUP, so that it is the last to go, not the first.
_WATCHDOG = """\
import os, signal, sys, time
parent, child, sig = (int(a) for a in sys.argv[1:4])
for s in (signal.SIGINT, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
while True:
    try:
        os.kill(child, 0)
    except ProcessLookupError:
        sys.exit(0)
    if os.getppid() != parent:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass
        sys.exit(0)
    time.sleep(float(sys.argv[4]))
"""


def _load_prctl() -> Callable[..., int] | None:
    # Resolved in the parent, once: the child, between fork and exec, only makes the call.
    if sys.platform != "linux":
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return prctl


_prctl = _load_prctl()
_watchdogs: list[subprocess.Popen[bytes]] = []  # kept, so that they are reaped, not warned about


def _death_signal_request(prctl: Callable[..., int], sig: int, parent: int) -> Callable[[], None]:
    def request() -> None:  # runs in the child, between fork and exec
        prctl(PR_SET_PDEATHSIG, sig)
        if os.getppid() != parent:  # the parent died before the request: nobody will send it
            os.kill(os.getpid(), sig)

    return request


def spawn(
    argv: Sequence[str], *, death_signal: signal.Signals = signal.SIGTERM, **popen: Any
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, **popen)`` whose child gets ``death_signal`` when this process dies."""
    if _prctl is not None:
        return subprocess.Popen(argv, preexec_fn=_death_signal_request(_prctl, death_signal, os.getpid()), **popen)
    return spawn_watched(argv, death_signal=death_signal, **popen)


def spawn_watched(
    argv: Sequence[str], *, death_signal: signal.Signals = signal.SIGTERM, **popen: Any
) -> subprocess.Popen[bytes]:
    """The fallback of :func:`spawn` where prctl does not exist: the child and a watchdog."""
    _watchdogs[:] = [w for w in _watchdogs if w.poll() is None]
    child: subprocess.Popen[bytes] = subprocess.Popen(argv, **popen)
    try:
        watchdog = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _WATCHDOG, str(os.getpid()), str(child.pid), str(int(death_signal)),
             str(WATCHDOG_INTERVAL)],
            stdin=subprocess.DEVNULL,
            process_group=0,
        )  # fmt: skip
    except OSError:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        child.wait()
        raise
    _watchdogs.append(watchdog)
    return child
