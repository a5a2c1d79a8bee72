"""Tries an installed eventbus as a user would, from outside the checkout.

    python scripts/smoke_wheel.py WHEEL [WHEEL ...]   # each in a new virtualenv (CI, after scripts/dist)
    python scripts/smoke_wheel.py --installed         # the eventbus this interpreter has (cibuildwheel)

With wheels: a fresh venv in a temporary directory per wheel, ``pip install WHEEL`` (not
editable; the dependencies come from the index), then the checks below in that venv. In both
forms the checks run from a directory that is not the checkout:

- ``import eventbus`` works and ``import apps`` does not (the wheel installs only eventbus);
- ``python -m eventbus --version`` names the hot path the wheel carries: pure Python for a
  ``py3-none-any`` wheel, compiled for any other;
- a handler round trip on the embedded default: a Runner with no URL configured and nothing
  answering at the default address, so eventbus starts its embedded Redis (redis-server, or
  fakeredis where the binary is missing); a message published there reaches the handler.

Exit 0 when everything passed, else 1 naming what failed.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import venv
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROUND_TRIP = """
import asyncio

import eventbus
from eventbus import Runner, on

received = []


@on("smoke")
async def take(msg, ctx):
    received.append(msg.text)


async def main():
    async with Runner([take], log_level=None) as runner:
        assert runner.server.source == "embedded", runner.server
        async with eventbus.connect(runner.url) as bus:
            await bus.publish("smoke", "hello")
        for _ in range(1000):
            if received:
                break
            await asyncio.sleep(0.01)
    assert received == ["hello"], received
    print("handler round trip on the embedded default: ok")


asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def checks(python: str, home: Path, *, compiled: bool) -> tuple[list[str], list[str]]:
    """(what was seen, what failed) for the eventbus that ``python`` imports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTBUS_", "PYTHONPATH"))}
    # Nothing answers at the default address, so the runner must start its embedded Redis.
    env["EVENTBUS_DEFAULT_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    work = home / "work"  # a directory of a user's, not the checkout
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)

    seen: list[str] = []
    failed: list[str] = []
    version = run(python, "-m", "eventbus", "--version")
    seen.append(version.stdout.strip())
    expected = "compiled hot path (mypyc)" if compiled else "pure-Python hot path"
    if version.returncode != 0 or expected not in version.stdout:
        failed.append(f"--version should name the {expected}: {version.stdout}{version.stderr}")
    apps = run(python, "-c", "import apps")
    if apps.returncode == 0 or "No module named 'apps'" not in apps.stderr:
        failed.append(f"a top-level apps package is installed: {apps.stderr or 'import apps worked'}")
    else:
        seen.append("import apps: ModuleNotFoundError, as it should be")
    (work / "round_trip.py").write_text(ROUND_TRIP)
    trip = run(python, "round_trip.py")
    seen.append(trip.stdout.strip())
    if trip.returncode != 0:
        failed.append(f"the handler round trip failed:\n{trip.stdout}{trip.stderr}")
    return seen, failed


def check_wheel(wheel: Path) -> tuple[list[str], list[str]]:
    with tempfile.TemporaryDirectory(prefix="eventbus-smoke-") as tmp:
        home = Path(tmp)
        venv.create(home / "venv", with_pip=True)
        python = str(home / "venv" / "bin" / "python")
        install = subprocess.run(
            [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(wheel.resolve())],
            cwd=home,
            capture_output=True,
            text=True,
            timeout=600,
        )
        if install.returncode != 0:
            return [], [f"pip install failed:\n{install.stderr}"]
        return checks(python, home, compiled=not wheel.name.endswith("-py3-none-any.whl"))


def report(name: str, seen: list[str], failed: list[str]) -> bool:
    for line in seen:
        print(f"{name}: {line}")
    for failure in failed:
        print(f"{name}: FAILED: {failure}", file=sys.stderr)
    return not failed


def main(args: list[str]) -> int:
    if args == ["--installed"]:
        with tempfile.TemporaryDirectory(prefix="eventbus-smoke-") as tmp:
            return 0 if report("installed", *checks(sys.executable, Path(tmp), compiled=True)) else 1
    if not args or any(arg.startswith("-") for arg in args):
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    wheels = [Path(arg) for arg in args]
    with ThreadPoolExecutor(max_workers=len(wheels)) as pool:
        results = list(pool.map(check_wheel, wheels))
    passed = [report(wheel.name, *result) for wheel, result in zip(wheels, results, strict=True)]
    return 0 if all(passed) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
