"""Starting a consumer process, knowing when it is subscribed, pausing it, collecting its result."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.contenders import Contender
from benchmarks.redisproc import RedisServer, die_with_parent
from benchmarks.spec import Spec

ROOT = Path(__file__).resolve().parent.parent  # the repository: `benchmarks` and `eventbus` import from here


class BenchError(RuntimeError):
    """A measurement that could not be taken; the message says why (with the consumer's stderr)."""


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("EVENTBUS_URL", None)  # every consumer is told its private server explicitly
    return env


class Consumer:
    """One contender process with its spec, logs and result file in a private temp directory."""

    def __init__(self, contender: Contender, spec: Spec, module_prefix: str = "benchmarks.contenders") -> None:
        self.contender = contender
        self.spec = spec
        self.dir = Path(spec.out).parent
        spec_path = self.dir / "spec.json"
        spec.dump(str(spec_path))
        self.log_path = self.dir / "consumer.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"{module_prefix}.{contender.module}", str(spec_path)],
            cwd=ROOT,
            env={**python_env(), **dict(contender.env)},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _check_alive(self, what: str) -> None:
        if self.proc.poll() is not None:
            raise BenchError(f"{self.contender.key} exited ({self.proc.returncode}) {what}:\n{self.log_tail()}")

    def wait_subscribed(self, server: RedisServer, timeout: float = 120.0) -> None:
        """Poll PUBSUB NUMSUB / NUMPAT until Redis reports every subscription of the spec.

        Asking Redis rather than the consumer works the same for every contender, and once Redis
        counts a subscription it delivers to it, whatever the client has read so far.
        """
        channels = self.spec.channel_routes()
        per = self.contender.connection_per_handler
        want = {ch.encode(): (len(names) if per else 1) for ch, names in channels.items()}
        want_patterns = len(self.spec.pattern_routes())
        deadline = time.monotonic() + timeout
        with server.client() as c:
            while True:
                self._check_alive("before subscribing")
                ok = c.call("PUBSUB", "NUMPAT") >= want_patterns
                if ok and want:
                    reply = c.call("PUBSUB", "NUMSUB", *want)
                    ok = all(reply[i + 1] >= want[reply[i]] for i in range(0, len(reply), 2))
                if ok:
                    return
                if time.monotonic() > deadline:
                    raise BenchError(f"{self.contender.key} not subscribed after {timeout}s:\n{self.log_tail()}")
                time.sleep(0.05)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """SIGSTOP the consumer so the publisher never competes with it for the two cores."""
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.proc.pid, signal.SIGCONT)

    def result(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        out = Path(self.spec.out)
        while not out.exists():
            self._check_alive("before reporting")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.contender.key}: no result after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.02)
        data: dict[str, Any] = json.loads(out.read_bytes())
        return data

    def stop(self) -> None:
        """SIGTERM, then SIGKILL: the figures are already written, a slow shutdown costs only time."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def consumer(
    contender: Contender, spec_fields: dict[str, Any], server: RedisServer, module_prefix: str = "benchmarks.contenders"
) -> Iterator[Consumer]:
    """A running consumer for ``spec_fields`` (without url/out), stopped and cleaned up on exit."""
    with tempfile.TemporaryDirectory(prefix=f"eventbus-bench-{contender.key}-") as tmp:
        spec = Spec(url=server.url, out=os.path.join(tmp, "result.json"), loop=contender.loop, **spec_fields)
        c = Consumer(contender, spec, module_prefix)
        try:
            yield c
        finally:
            c.stop()
