"""eventbus.speedups and setup.py: which hot path is imported, and that an install without a
compiler still works.

Each check runs in a subprocess, because the choice is made once, when ``eventbus`` is first
imported. CI sets ``EVENTBUS_EXPECT_COMPILED=1`` (.ci/run), so an install that silently fell back to
pure Python fails there instead of passing on the slower path unnoticed.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import eventbus.speedups
import eventbus.worker
from eventbus import on
from eventbus.testing import TestBus

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import eventbus, eventbus.message, eventbus.dispatch, eventbus.worker; "
    "print(eventbus.speedups.COMPILED, eventbus.worker.__file__, eventbus.speedups.describe(), sep='|')"
)
needs_build = pytest.mark.skipif(
    not eventbus.speedups.COMPILED, reason=f"this checkout runs {eventbus.speedups.describe()}"
)


def probe(root: Path, **env: str) -> tuple[bool, str, str]:
    """(compiled?, the file eventbus.worker came from, the description) in a fresh interpreter."""
    environ = {k: v for k, v in os.environ.items() if k != "EVENTBUS_PURE_PYTHON"}
    environ["PYTHONPATH"] = str(root)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**environ, **env}, cwd=root, capture_output=True, text=True, check=True
    ).stdout.strip()
    compiled, worker_file, description = out.split("|")
    return compiled == "True", worker_file, description


def copy_package(tmp_path: Path) -> Path:
    """The package as installed here (sources, compiled modules, manifest) in a directory of its own."""
    shutil.copytree(ROOT / "eventbus", tmp_path / "eventbus", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_flag_agrees_with_what_was_imported() -> None:
    imported_compiled = not eventbus.worker.__file__.endswith(".py")
    assert imported_compiled is eventbus.speedups.COMPILED


@pytest.mark.skipif(os.environ.get("EVENTBUS_EXPECT_COMPILED") != "1", reason="set by CI (.ci/run) only")
def test_ci_runs_the_compiled_path() -> None:
    # CI's install has mypy and gcc: falling back to pure Python there is a broken build.
    assert eventbus.speedups.COMPILED, eventbus.speedups.describe()


def test_eventbus_pure_python_forces_the_reference_modules() -> None:
    compiled, worker_file, description = probe(ROOT, EVENTBUS_PURE_PYTHON="1")
    assert not compiled
    assert worker_file.endswith("worker.py")
    assert description == "pure-Python hot path (EVENTBUS_PURE_PYTHON is set)"


def test_eventbus_pure_python_0_does_not() -> None:
    assert probe(ROOT, EVENTBUS_PURE_PYTHON="0") == probe(ROOT)


@needs_build
def test_a_source_edited_after_compiling_is_imported_from_source(tmp_path: Path) -> None:
    # An editable install being worked on: the stale build must never hide the edit.
    root = copy_package(tmp_path)
    assert probe(root)[0]
    worker = root / "eventbus" / "worker.py"
    worker.write_text(worker.read_text() + "\n# edited\n")
    compiled, worker_file, description = probe(root)
    assert not compiled and worker_file == str(worker)
    assert "eventbus/worker.py changed since it was compiled; reinstall" in description


@needs_build
def test_a_sourceless_install_uses_its_build(tmp_path: Path) -> None:
    # Without the .py files there is nothing the build could be stale against (and no pure path).
    root = copy_package(tmp_path)
    for name in eventbus.speedups.HOT_MODULES:
        (root / "eventbus" / f"{name}.py").unlink()
    assert probe(root)[0]


@needs_build
def test_without_the_manifest_the_build_is_not_trusted(tmp_path: Path) -> None:
    root = copy_package(tmp_path)
    (root / "eventbus" / "_compiled_sources.json").unlink()
    compiled, _, description = probe(root)
    assert not compiled
    assert "not compiled at install time" in description


def test_a_pure_install_runs_a_handler(tmp_path: Path) -> None:
    # The package without any compiled module, as an install without a compiler leaves it.
    root = copy_package(tmp_path)
    for built in (root / "eventbus").glob("*.so"):
        built.unlink()
    (root / "eventbus" / "_compiled_sources.json").unlink(missing_ok=True)
    script = (
        "import asyncio\n"
        "from eventbus import on, speedups\n"
        "from eventbus.testing import TestBus\n"
        "got = []\n"
        "@on('orders')\n"
        "async def take(msg, ctx):\n"
        "    got.append(msg.json())\n"
        "async def main():\n"
        "    async with TestBus(__name__) as bus:\n"
        "        await bus.publish('orders', {'id': 1})\n"
        "        await bus.drain()\n"
        "asyncio.run(main())\n"
        "print(speedups.describe(), got)\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "EVENTBUS_PURE_PYTHON"}
    out = subprocess.run(
        [sys.executable, "-c", script],
        env={**environ, "PYTHONPATH": str(root)},
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "pure-Python hot path (not compiled at install time (no C compiler, or installed with "
        "EVENTBUS_PURE_PYTHON=1)) [{'id': 1}]"
    )


def build_ext(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """setup.py's build_ext --inplace in a copy of the project, with ``env`` added."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "eventbus", project / "eventbus", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.json")
    )
    shutil.copytree(ROOT / "apps", project / "apps", ignore=shutil.ignore_patterns("__pycache__"))
    return subprocess.run(
        [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
        cwd=project,
        env={**{k: v for k, v in os.environ.items() if k != "EVENTBUS_PURE_PYTHON"}, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({"CC": "/bin/false"}, "eventbus setup: no working C compiler ("),
        ({"EVENTBUS_PURE_PYTHON": "1"}, "eventbus setup: EVENTBUS_PURE_PYTHON is set: installing the pure-Python path"),
    ],
    ids=["no-compiler", "pure-requested"],
)
def test_setup_installs_pure_python_when_it_cannot_or_should_not_compile(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    pytest.importorskip("setuptools", reason="setup.py needs setuptools (pip brings it into its build environment)")
    done = build_ext(tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert said in done.stderr
    package = tmp_path / "project" / "eventbus"
    assert not list(package.glob("*.so"))
    assert not (package / "_compiled_sources.json").exists()


@pytest.mark.slow
def test_a_compiler_failing_part_way_leaves_a_pure_install(tmp_path: Path) -> None:
    # The probe compiles, the real build fails (a broken toolchain, a full disk): mypyc has run and
    # written the manifest by then, and the install must still end as a working pure-Python one.
    pytest.importorskip("mypyc", reason="the build needs mypyc (pip brings it into its build environment)")
    compiler = tmp_path / "cc-that-fails"
    compiler.write_text('#!/bin/sh\ncase "$*" in *probe.c*) exec cc "$@";; esac\nexit 1\n')
    compiler.chmod(0o755)
    done = build_ext(tmp_path, CC=str(compiler))
    assert done.returncode == 0, done.stderr
    assert "eventbus setup: compiling the hot path failed (" in done.stderr
    package = tmp_path / "project" / "eventbus"
    assert not list(package.glob("*.so"))
    assert not (package / "_compiled_sources.json").exists()


def test_the_manifest_names_the_compiled_modules() -> None:
    manifest = ROOT / "eventbus" / "_compiled_sources.json"
    if not manifest.exists():
        pytest.skip(f"this checkout runs {eventbus.speedups.describe()}")
    assert sorted(json.loads(manifest.read_text())) == sorted(eventbus.speedups.HOT_MODULES)


def test_wheels_carry_the_manifest() -> None:
    # Without it an installed wheel's compiled modules are never used (speedups trusts no build it
    # cannot check). Checked by hand with `pip wheel` + a fresh venv; this keeps the setting in place.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert eventbus.speedups.MANIFEST.name in pyproject["tool"]["setuptools"]["package-data"]["eventbus"]


async def test_the_runner_says_which_path_runs_in_its_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    @on("speedups:hello")
    async def hello(msg: object, ctx: object) -> None:
        pass

    with caplog.at_level(logging.DEBUG, logger="eventbus"):
        async with TestBus([hello]):
            pass
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hot path: ")]
    assert lines == [f"hot path: {eventbus.speedups.describe()}"]


def test_setup_compiles_exactly_the_modules_speedups_chooses_between() -> None:
    # setup.py cannot import eventbus (its dependencies are not in the build environment), so the
    # list is written twice; this keeps the two in step.
    tree = ast.parse((ROOT / "setup.py").read_text())
    assigned = {
        target.id: node.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert ast.literal_eval(assigned["HOT_MODULES"]) == eventbus.speedups.HOT_MODULES
