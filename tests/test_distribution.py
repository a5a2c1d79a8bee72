"""What ships: the sdist and the wheels that scripts/dist builds, inspected; cibuildwheel's selection.

CI builds them first (``bash scripts/dist .ci/dist``, in python -m build's isolated environment,
as a release would) and points ``EVENTBUS_DIST_DIR`` at the result; scripts/smoke_wheel.py then
installs each wheel outside the checkout. Elsewhere these tests skip, since a build takes a
minute: ``bash scripts/dist /tmp/dist && EVENTBUS_DIST_DIR=/tmp/dist pytest tests/test_distribution.py``.
"""

from __future__ import annotations

import email.parser
import json
import os
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

from eventbus._hotpath import HOT_MODULES, SHARED_LIBRARY

ROOT = Path(__file__).resolve().parent.parent
DIST = os.environ.get("EVENTBUS_DIST_DIR")
needs_dist = pytest.mark.skipif(not DIST, reason="EVENTBUS_DIST_DIR is set by CI after bash scripts/dist")


def dist() -> Path:
    assert DIST is not None
    return Path(DIST)


def only(pattern: str) -> Path:
    found = sorted(dist().glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {dist()}, found {[p.name for p in found]}"
    return found[0]


def pure_wheel() -> Path:
    return only("eventbus-*-py3-none-any.whl")


def compiled_wheel() -> Path:
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    return only(f"eventbus-*-{tag}-{tag}-*.whl")


def wheels() -> list[Path]:
    return [pure_wheel(), compiled_wheel()]


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def build_record(wheel: Path) -> dict[str, object]:
    with zipfile.ZipFile(wheel) as archive:
        return dict(json.loads(archive.read("eventbus/_build.json")))


def metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as archive:
        info = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        return email.parser.Parser().parsestr(archive.read(info).decode())


@needs_dist
def test_dist_holds_an_sdist_a_pure_wheel_and_a_compiled_wheel() -> None:
    only("eventbus-*.tar.gz")
    assert pure_wheel().name != compiled_wheel().name
    assert len(list(dist().iterdir())) == 3, sorted(p.name for p in dist().iterdir())


@needs_dist
@pytest.mark.parametrize("kind", ["pure", "compiled"])
def test_a_wheel_installs_only_the_eventbus_package(kind: str) -> None:
    wheel = pure_wheel() if kind == "pure" else compiled_wheel()
    top = {name.split("/")[0] for name in names(wheel)}
    assert top == {"eventbus", next(t for t in top if t.endswith(".dist-info"))}, top
    assert not any(name.startswith(("apps/", "tests/", "benchmarks/")) for name in names(wheel))


@needs_dist
def test_the_compiled_wheel_carries_the_hot_modules_and_their_record() -> None:
    wheel = compiled_wheel()
    built = {Path(name).name.split(".")[0] for name in names(wheel) if name.endswith((".so", ".pyd"))}
    assert built == {*HOT_MODULES, SHARED_LIBRARY}
    record = build_record(wheel)
    assert record["compiled"] is True and sorted(record["sources"]) == sorted(HOT_MODULES)  # type: ignore[call-overload]
    # The reference sources ship beside the compiled modules.
    assert {f"eventbus/{name}.py" for name in HOT_MODULES} <= set(names(wheel))


@needs_dist
def test_the_pure_wheel_has_no_compiled_code_and_says_why() -> None:
    wheel = pure_wheel()
    assert not [name for name in names(wheel) if name.endswith((".so", ".pyd", ".c"))]
    assert build_record(wheel) == {"compiled": False, "reason": "built with EVENTBUS_PURE_PYTHON=1", "requested": True}


@needs_dist
def test_the_sdist_builds_from_what_it_holds() -> None:
    with tarfile.open(only("eventbus-*.tar.gz")) as archive:
        members = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"setup.py", "pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "eventbus/py.typed"} <= members
    assert {f"eventbus/{name}.py" for name in HOT_MODULES} <= members
    # A build record from the tree the sdist was made in would describe another build.
    assert "eventbus/_build.json" not in members
    assert not any(name.startswith(("apps/", "tests/")) for name in members)


@needs_dist
@pytest.mark.parametrize("kind", ["pure", "compiled"])
def test_wheel_metadata_is_what_pyproject_declares(kind: str) -> None:
    wheel = pure_wheel() if kind == "pure" else compiled_wheel()
    meta = metadata(wheel)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["License-Expression"] == project["license"] == "MIT"
    assert meta["Requires-Python"] == project["requires-python"]
    required = [r for r in meta.get_all("Requires-Dist", []) if "extra ==" not in r]
    assert len(required) == len(project["dependencies"]), required
    with zipfile.ZipFile(wheel) as archive:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())


def supported_pythons() -> list[str]:
    classifiers = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["classifiers"]
    prefix = "Programming Language :: Python :: 3."
    return [f"cp3{c.removeprefix(prefix)}" for c in classifiers if c.startswith(prefix)]


@pytest.mark.parametrize(
    ("platform", "kinds"),
    [
        ("linux", [f"{libc}_{arch}" for arch in ("x86_64", "aarch64") for libc in ("manylinux", "musllinux")]),
        ("macos", ["macosx_x86_64", "macosx_arm64"]),
    ],
)
def test_cibuildwheel_builds_a_wheel_per_supported_python_and_platform(platform: str, kinds: list[str]) -> None:
    # The platform wheels cannot be built here (no container engine); the selection can be read.
    done = subprocess.run(
        [sys.executable, "-m", "cibuildwheel", "--print-build-identifiers", "--platform", platform],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    expected = {f"{python}-{kind}" for python in supported_pythons() for kind in kinds}
    assert set(done.stdout.split()) == expected


def test_cibuildwheel_tests_each_wheel_with_the_smoke_test() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["cibuildwheel"]
    assert config["test-command"] == "python {project}/scripts/smoke_wheel.py --installed"
    assert (ROOT / "scripts" / "smoke_wheel.py").is_file()
