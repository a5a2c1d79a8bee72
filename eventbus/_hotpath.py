"""Which hot path this process runs: the mypyc-compiled modules or the pure-Python reference.

The modules of :data:`HOT_MODULES` (the ``Message`` type, the dispatcher, the worker loop and its
parts) are compiled by setup.py where a C compiler is available, and installed beside their
pure-Python source. Python would import the compiled module whenever it exists; this module
decides instead, once, when ``eventbus`` is first imported (before any of them is), and then either
lets the import system find the compiled modules or points it at the ``.py`` files:

- ``EVENTBUS_PURE_PYTHON=1`` forces the reference path (to compare, or to debug with pdb);
- no build (no compiler at install time, or installed with ``EVENTBUS_PURE_PYTHON=1``), or no
  build for this interpreter, means the reference path;
- a source that changed since it was compiled (an editable install being worked on) means the
  reference path for all of them, so an edit is never hidden behind a stale build. They go
  together because the compiled ones share one extension library and its ``Message`` type.

``python -m eventbus --version`` and the runner's debug log at startup say which is in use.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from pathlib import Path
from types import ModuleType
from typing import Any

HOT_MODULES = ("_message", "_parts", "_keyed", "_batch", "_dispatch", "_worker")  # keep in step with setup.py
PACKAGE_DIR = Path(__file__).resolve().parent
MANIFEST = PACKAGE_DIR / "_build.json"  # written by setup.py: what it compiled, or why it did not
SHARED_LIBRARY = "_speedups__mypyc"  # mypyc's runtime for the group, named in setup.py


def _requested_pure() -> bool:
    return os.environ.get("EVENTBUS_PURE_PYTHON", "").strip() not in ("", "0")


def _has_extension(stem: str) -> bool:
    return any((PACKAGE_DIR / (stem + suffix)).is_file() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _read_build_record() -> tuple[dict[str, Any] | None, str | None]:
    """(the record setup.py wrote, None) or (None, why it cannot be used)."""
    try:
        build = json.loads(MANIFEST.read_text())
    except FileNotFoundError:
        return None, "no build record: installed without running setup.py's build, or from a copy of the sources"
    except (OSError, ValueError) as exc:
        return None, f"unreadable build record {MANIFEST.name}: {exc}"
    if not isinstance(build, dict) or not isinstance(build.get("sources", {}), dict):
        return None, f"unreadable build record {MANIFEST.name}"
    return build, None


def _why_not_compiled(build: dict[str, Any] | None, problem: str | None) -> str | None:
    """None if the compiled modules can be used, else the reason they are not."""
    if _requested_pure():
        return "EVENTBUS_PURE_PYTHON is set"
    if build is None:
        return problem
    if not build.get("compiled"):
        return f"not compiled when built: {build.get('reason', 'no reason recorded')}"
    hashes = build["sources"]
    if not _has_extension(SHARED_LIBRARY) or not all(_has_extension(name) for name in HOT_MODULES):
        return f"no compiled build for this interpreter ({sys.implementation.cache_tag}); reinstall to build one"
    for name in HOT_MODULES:
        try:
            source = (PACKAGE_DIR / f"{name}.py").read_bytes()
        except FileNotFoundError:
            continue  # a sourceless install: nothing the build could be stale against
        if hashlib.sha256(source).hexdigest() != hashes.get(name):
            return f"eventbus/{name}.py changed since it was compiled; reinstall (pip install -e .) to recompile"
    return None


class _SourceFinder(importlib.abc.MetaPathFinder):
    """Imports the hot modules from their ``.py`` source, ahead of the compiled extensions."""

    names = frozenset(f"eventbus.{name}" for name in HOT_MODULES)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname not in self.names:
            return None
        return importlib.util.spec_from_file_location(fullname, PACKAGE_DIR / (fullname.rpartition(".")[2] + ".py"))


_BUILD, _PROBLEM = _read_build_record()
REASON_PURE: str | None = _why_not_compiled(_BUILD, _PROBLEM)
#: True when this process runs the mypyc-compiled hot path.
COMPILED: bool = REASON_PURE is None
#: True when the install tried to compile and could not (no compiler, a type error, a failing
#: compiler), rather than being asked for pure Python: the runner warns about it at startup,
#: since pip shows the build's own explanation only with -v.
FELL_BACK: bool = (
    not COMPILED
    and not _requested_pure()
    and _BUILD is not None
    and not _BUILD.get("compiled")
    and not _BUILD.get("requested")
)
if not COMPILED and not any(isinstance(finder, _SourceFinder) for finder in sys.meta_path):
    sys.meta_path.insert(0, _SourceFinder())


def describe() -> str:
    """One line for logs and ``--version``: which hot path runs, and if pure, why."""
    if COMPILED:
        return "compiled hot path (mypyc)"
    return f"pure-Python hot path ({REASON_PURE})"
