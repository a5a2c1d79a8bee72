"""The public API is what eventbus/__init__.py exports, and the apps use nothing else."""

from __future__ import annotations

import ast
from pathlib import Path

import eventbus

ROOT = Path(__file__).resolve().parent.parent


def test_all_lists_exactly_the_public_names() -> None:
    public = {name for name in vars(eventbus) if not name.startswith("_") and name != "annotations"}
    modules = {name for name, value in vars(eventbus).items() if type(value).__name__ == "module"}
    assert set(eventbus.__all__) - {"__version__"} == public - modules
    assert sorted(eventbus.__all__) == eventbus.__all__


def test_every_exported_name_exists() -> None:
    missing = [name for name in eventbus.__all__ if name not in vars(eventbus)]
    assert not missing, f"eventbus.__all__ names what eventbus does not define: {missing}"


def test_apps_use_only_the_public_api() -> None:
    """Apps are user code: `from eventbus import ...` and `eventbus.testing`, nothing internal."""
    allowed = {"eventbus", "eventbus.testing"}
    offenders = []
    for path in (ROOT / "apps").rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("eventbus"):
                if node.module not in allowed:
                    offenders.append(f"{path.relative_to(ROOT)}: from {node.module} import ...")
            elif isinstance(node, ast.Import):
                offenders += [
                    f"{path.relative_to(ROOT)}: import {a.name}"
                    for a in node.names
                    if a.name.startswith("eventbus.") and a.name not in allowed
                ]
    assert not offenders, offenders
