"""Children that die with their parent, even a SIGKILLed one: prctl on Linux, a watchdog elsewhere."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from eventbus import _children as children_module
from tests.cli_process import ROOT, children, gone, needs_proc, wait_until

# A parent that starts `sleep 60` the way it is told, prints the child's pid, and waits to be killed.
PARENT = """
import sys, time
from eventbus._children import spawn, spawn_watched
child = (spawn_watched if sys.argv[1] == "watched" else spawn)(["sleep", "60"])
print(child.pid, flush=True)
if sys.argv[2] == "stop":
    child.terminate()
    child.wait()
    print("stopped", flush=True)
time.sleep(60)
"""

pytestmark = needs_proc


def start_parent(how: str, then: str) -> tuple[subprocess.Popen[str], int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, how, then], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


@pytest.mark.parametrize("how", ["spawn", "watched"])
def test_the_child_dies_with_a_sigkilled_parent(how: str) -> None:
    if how == "spawn" and children_module._prctl is None:
        pytest.skip("no prctl here: spawn is the watchdog")
    parent, child = start_parent(how, "wait")
    try:
        assert not gone(child)
        parent.kill()
        parent.wait()
        assert wait_until(lambda: gone(child), timeout=5), f"{how}: the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()
        if not gone(child):
            os.kill(child, signal.SIGKILL)


def test_the_watchdog_leaves_when_its_child_is_stopped_normally() -> None:
    parent, _ = start_parent("watched", "stop")
    try:
        assert parent.stdout is not None and parent.stdout.readline() == "stopped\n"
        # Only the watchdog is left below the parent, and it goes once it sees the child gone.
        assert wait_until(lambda: children(parent.pid) == [], timeout=5)
        assert parent.poll() is None
    finally:
        parent.kill()
        parent.wait()
