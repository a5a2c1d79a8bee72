"""The dependency ranges in pyproject.toml and the lock CI also tests with (scripts/lock.txt)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "scripts" / "lock.txt"


def dev_requirements() -> list[Requirement]:
    """What `pip install -e '.[dev]'` asks for directly: the dependencies and the dev extra, its
    references to eventbus's other extras followed."""
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    wanted, seen, pending = [Requirement(r) for r in project["dependencies"]], set(), ["dev"]
    while pending:
        extra = pending.pop()
        seen.add(extra)
        for spec in extras[extra]:
            requirement = Requirement(spec)
            if requirement.name == project["name"]:
                pending.extend(e for e in requirement.extras if e not in seen)
            else:
                wanted.append(requirement)
    return [r for r in wanted if r.marker is None or r.marker.evaluate()]


def locked() -> dict[str, Version]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([^\s;#]+)", line.strip())
        if match:
            pins[canonicalize_name(match[1])] = Version(match[2])
    return pins


def test_the_lock_pins_every_requirement_within_its_range() -> None:
    pins = locked()
    for requirement in dev_requirements():
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not in scripts/lock.txt: run bash scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"scripts/lock.txt pins {requirement.name}=={pins[name]}, outside pyproject.toml's {requirement}"
        )


def test_the_lock_pins_exact_versions_only() -> None:
    lines = [line for line in LOCK.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines and all("==" in line for line in lines), [line for line in lines if "==" not in line]


@pytest.mark.parametrize("name", ["setuptools", "mypy"])
def test_build_requirements_are_bounded_above(name: str) -> None:
    # A new major of either can change what the build does; the range is what was built with.
    [requirement] = [Requirement(r) for r in PYPROJECT["build-system"]["requires"] if Requirement(r).name == name]
    assert any(spec.operator == "<" for spec in requirement.specifier), requirement


def test_redis_py_is_bounded_below_its_next_major() -> None:
    # ctx.redis rests on redis-py internals (eventbus/_backends/redispy_internals.py, checked by its
    # contract test): a new major may change them, so it is taken only once tested.
    [requirement] = [Requirement(r) for r in PYPROJECT["project"]["dependencies"] if Requirement(r).name == "redis"]
    uppers = [Version(spec.version) for spec in requirement.specifier if spec.operator == "<"]
    assert uppers and all(upper.micro == 0 and upper.minor == 0 for upper in uppers), requirement
