"""eventbus._hotpath and setup.py: which hot path is imported, and that an install without a
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

import eventbus._hotpath
import eventbus._worker
from eventbus import on
from eventbus.testing import TestBus

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import eventbus, eventbus._message, eventbus._dispatch, eventbus._worker; "
    "print(eventbus._hotpath.COMPILED, eventbus._worker.__file__, eventbus._hotpath.describe(), sep='|')"
)
needs_build = pytest.mark.skipif(
    not eventbus._hotpath.COMPILED, reason=f"this checkout runs {eventbus._hotpath.describe()}"
)


def python_in(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """A fresh interpreter that imports eventbus from ``root``, with ``env`` added; it must succeed."""
    environ = {k: v for k, v in os.environ.items() if k != "EVENTBUS_PURE_PYTHON"}
    environ["PYTHONPATH"] = str(root)
    done = subprocess.run(
        [sys.executable, *args], env={**environ, **env}, cwd=root, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done


def probe(root: Path, **env: str) -> tuple[bool, str, str]:
    """(compiled?, the file eventbus._worker came from, the description) in a fresh interpreter."""
    compiled, worker_file, description = python_in(root, "-c", PROBE, **env).stdout.strip().split("|")
    return compiled == "True", worker_file, description


def copy_package(tmp_path: Path) -> Path:
    """The package as installed here (sources, compiled modules, manifest) in a directory of its own."""
    shutil.copytree(ROOT / "eventbus", tmp_path / "eventbus", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_flag_agrees_with_what_was_imported() -> None:
    imported_compiled = not eventbus._worker.__file__.endswith(".py")
    assert imported_compiled is eventbus._hotpath.COMPILED


@pytest.mark.skipif(os.environ.get("EVENTBUS_EXPECT_COMPILED") != "1", reason="set by CI (.ci/run) only")
def test_ci_runs_the_compiled_path() -> None:
    # CI's install has mypy and gcc: falling back to pure Python there is a broken build.
    assert eventbus._hotpath.COMPILED, eventbus._hotpath.describe()


def test_eventbus_pure_python_forces_the_reference_modules() -> None:
    compiled, worker_file, description = probe(ROOT, EVENTBUS_PURE_PYTHON="1")
    assert not compiled
    assert worker_file.endswith("_worker.py")
    assert description == "pure-Python hot path (EVENTBUS_PURE_PYTHON is set)"


def test_eventbus_pure_python_0_does_not() -> None:
    assert probe(ROOT, EVENTBUS_PURE_PYTHON="0") == probe(ROOT)


@needs_build
def test_a_source_edited_after_compiling_is_imported_from_source(tmp_path: Path) -> None:
    # An editable install being worked on: the stale build must never hide the edit.
    root = copy_package(tmp_path)
    assert probe(root)[0]
    worker = root / "eventbus" / "_worker.py"
    worker.write_text(worker.read_text() + "\n# edited\n")
    compiled, worker_file, description = probe(root)
    assert not compiled and worker_file == str(worker)
    assert "eventbus/_worker.py changed since it was compiled; reinstall" in description


@needs_build
def test_a_sourceless_install_uses_its_build(tmp_path: Path) -> None:
    # Without the .py files there is nothing the build could be stale against (and no pure path).
    root = copy_package(tmp_path)
    for name in eventbus._hotpath.HOT_MODULES:
        (root / "eventbus" / f"{name}.py").unlink()
    assert probe(root)[0]


@needs_build
def test_without_the_build_record_the_build_is_not_trusted(tmp_path: Path) -> None:
    root = copy_package(tmp_path)
    (root / "eventbus" / "_build.json").unlink()
    compiled, _, description = probe(root)
    assert not compiled
    assert "pure-Python hot path (no build record: " in description


@pytest.mark.parametrize("content", ["{not json", "[]", '{"compiled": true, "sources": 3}'])
def test_an_unreadable_build_record_is_named(tmp_path: Path, content: str) -> None:
    root = copy_package(tmp_path)
    (root / "eventbus" / "_build.json").write_text(content)
    compiled, _, description = probe(root)
    assert not compiled
    assert "pure-Python hot path (unreadable build record _build.json" in description


def test_version_gives_the_reason_the_build_recorded(tmp_path: Path) -> None:
    # pip shows a build's output only with -v: the record is where a user finds the true reason.
    root = copy_package(tmp_path)
    reason = "mypyc could not compile the hot path (eventbus/_worker.py:1: error: something)"
    (root / "eventbus" / "_build.json").write_text(json.dumps({"compiled": False, "reason": reason}))
    done = python_in(root, "-m", "eventbus", "--version")
    assert f"pure-Python hot path (not compiled when built: {reason})" in " ".join(done.stdout.split())


@pytest.mark.parametrize("requested", [False, True], ids=["fell-back", "pure-requested"])
def test_the_runner_warns_when_the_install_could_not_compile(tmp_path: Path, requested: bool) -> None:
    root = copy_package(tmp_path)
    reason = "built with EVENTBUS_PURE_PYTHON=1" if requested else "no working C compiler (probe)"
    record = {"compiled": False, "reason": reason, "requested": requested}
    (root / "eventbus" / "_build.json").write_text(json.dumps(record))
    script = (
        "import asyncio, logging\n"
        "from eventbus import on\n"
        "from eventbus.testing import TestBus\n"
        "@on('x')\n"
        "async def take(msg, ctx): pass\n"
        "async def main():\n"
        "    async with TestBus(__name__): pass\n"
        "logging.basicConfig(level=logging.INFO, format='%(levelname)s %(message)s')\n"
        "asyncio.run(main())\n"
    )
    done = python_in(root, "-c", script)
    warned = [line for line in done.stderr.splitlines() if line.startswith("WARNING hot path: ")]
    if requested:
        assert warned == [], done.stderr
    else:
        assert len(warned) == 1 and "(not compiled when built: no working C compiler (probe))" in warned[0]
        assert "set EVENTBUS_PURE_PYTHON=1 to choose this path and silence this line" in warned[0]


def test_the_build_type_check_needs_no_installed_package() -> None:
    # pip's isolated build has mypy but none of eventbus's dependencies, and it could see the
    # target environment's packages or not depending on the install: the first install of a new
    # venv fell back to pure Python while the second compiled. setup.py's options make the check
    # independent of what is installed; this runs it as the build does.
    tree = ast.parse((ROOT / "setup.py").read_text())
    options = next(
        ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "MYPYC_OPTIONS" for t in node.targets)
    )
    assert "--no-site-packages" in options
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *options, "--cache-dir", os.devnull]
        + [f"eventbus/{name}.py" for name in eventbus._hotpath.HOT_MODULES],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_pure_install_runs_a_handler(tmp_path: Path) -> None:
    # The package without any compiled module, as an install without a compiler leaves it.
    root = copy_package(tmp_path)
    for built in (root / "eventbus").glob("*.so"):
        built.unlink()
    (root / "eventbus" / "_build.json").write_text('{"compiled": false, "reason": "no working C compiler (probe)"}')
    script = (
        "import asyncio\n"
        "from eventbus import on, _hotpath\n"
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
        "print(_hotpath.describe(), got)\n"
    )
    out = python_in(root, "-c", script)
    assert out.stdout.strip() == (
        "pure-Python hot path (not compiled when built: no working C compiler (probe)) [{'id': 1}]"
    )


def build_ext(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """setup.py's build_ext --inplace in a copy of the project, with ``env`` added."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "eventbus", project / "eventbus", ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.json")
    )
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
        (
            {"EVENTBUS_PURE_PYTHON": "1"},
            "eventbus setup: built with EVENTBUS_PURE_PYTHON=1: installing the pure-Python path",
        ),
    ],
    ids=["no-compiler", "pure-requested"],
)
def test_setup_installs_pure_python_when_it_cannot_or_should_not_compile(
    tmp_path: Path, env: dict[str, str], said: str
) -> None:
    done = build_ext(tmp_path, **env)
    assert done.returncode == 0, done.stderr
    assert said in done.stderr
    package = tmp_path / "project" / "eventbus"
    assert not list(package.glob("*.so"))
    record = json.loads((package / "_build.json").read_text())
    assert record["compiled"] is False
    assert f"eventbus setup: {record['reason']}: installing the pure-Python path" in done.stderr


@pytest.mark.slow
def test_a_compiler_failing_part_way_leaves_a_pure_install(tmp_path: Path) -> None:
    # The probe compiles, the real build fails (a broken toolchain, a full disk): mypyc has run and
    # written the manifest by then, and the install must still end as a working pure-Python one.
    compiler = tmp_path / "cc-that-fails"
    compiler.write_text('#!/bin/sh\ncase "$*" in *probe.c*) exec cc "$@";; esac\nexit 1\n')
    compiler.chmod(0o755)
    done = build_ext(tmp_path, CC=str(compiler))
    assert done.returncode == 0, done.stderr
    assert "eventbus setup: compiling the hot path failed (" in done.stderr
    package = tmp_path / "project" / "eventbus"
    assert not list(package.glob("*.so"))
    record = json.loads((package / "_build.json").read_text())
    assert record["compiled"] is False and record["reason"].startswith("compiling the hot path failed (")


@needs_build
def test_the_build_record_names_the_compiled_modules() -> None:
    record = json.loads(eventbus._hotpath.MANIFEST.read_text())
    assert sorted(record["sources"]) == sorted(eventbus._hotpath.HOT_MODULES)


def test_wheels_carry_the_manifest() -> None:
    # Without it an installed wheel's compiled modules are never used (_hotpath trusts no build it
    # cannot check). Checked by hand with `pip wheel` + a fresh venv; this keeps the setting in place.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert eventbus._hotpath.MANIFEST.name in pyproject["tool"]["setuptools"]["package-data"]["eventbus"]


async def test_the_runner_says_which_path_runs_in_its_debug_log(caplog: pytest.LogCaptureFixture) -> None:
    @on("speedups:hello")
    async def hello(msg: object, ctx: object) -> None:
        pass

    with caplog.at_level(logging.DEBUG, logger="eventbus"):
        async with TestBus([hello]):
            pass
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("hot path: ")]
    assert lines == [f"hot path: {eventbus._hotpath.describe()}"]


def test_setup_compiles_exactly_the_modules_hotpath_chooses_between() -> None:
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
    assert ast.literal_eval(assigned["HOT_MODULES"]) == eventbus._hotpath.HOT_MODULES
