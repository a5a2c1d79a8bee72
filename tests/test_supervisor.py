"""The supervisor's shutdown, with plain child processes standing in for workers."""

from __future__ import annotations

import sys

from eventbus._supervisor import Supervisor

# A worker still starting: no SIGTERM handler yet, so the signal's default action ends it.
STARTING = [sys.executable, "-c", "import time; time.sleep(60)"]
FAILED = [sys.executable, "-c", "raise SystemExit(3)"]


def test_a_worker_stopped_while_still_starting_is_a_clean_stop() -> None:
    supervisor = Supervisor(lambda i: STARTING, 2, grace=1)
    for worker in supervisor.workers:
        supervisor._spawn(worker)
    assert supervisor._shutdown() == 0


def test_a_worker_that_exited_with_an_error_fails_the_shutdown() -> None:
    supervisor = Supervisor(lambda i: FAILED, 1, grace=1)
    worker = supervisor.workers[0]
    supervisor._spawn(worker)
    assert worker.process is not None and worker.process.wait(30) == 3
    assert supervisor._shutdown() == 1
