"""Builds eventbus with its hot path compiled by mypyc wherever that can be done.

The metadata lives in pyproject.toml; this file only adds the optional extension modules.
``eventbus/message.py``, ``dispatch.py`` and ``worker.py`` (routing a socket read, the inbox
hand-off, the ``Message`` type, the worker loop) are compiled unchanged from the same source:
like hiredis for redis-py, the same behaviour, faster. The pure-Python modules stay the
reference and are always installed beside the compiled ones; ``eventbus.speedups`` picks
which to import.

Compilation is skipped, and the install goes on in pure Python with one line saying why, when
``EVENTBUS_PURE_PYTHON=1`` is set, when mypyc cannot be imported, when no working C compiler
is found, or when the compiler fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
HOT_MODULES = ("message", "dispatch", "worker")  # keep in step with eventbus/speedups.py
# What the runtime checks before importing a compiled module: the hash of the source it was
# compiled from, so an edited source is never shadowed by a stale build.
MANIFEST = HERE / "eventbus" / "_compiled_sources.json"


def say(message: str) -> None:
    print(f"eventbus setup: {message}", file=sys.stderr, flush=True)


def pure_requested() -> bool:
    return os.environ.get("EVENTBUS_PURE_PYTHON", "").strip() not in ("", "0")


def compiler_problem() -> str | None:
    """None if a C compiler builds against this Python's headers, else what went wrong.

    Checked before mypyc runs: its type check takes ~20 s, wasted on a machine that cannot
    compile the result.
    """
    # Imported here, after setuptools, which provides distutils on Python 3.12+.
    from distutils import ccompiler, sysconfig

    try:
        compiler: Any = ccompiler.new_compiler()
        sysconfig.customize_compiler(compiler)
        with tempfile.TemporaryDirectory() as tmp:
            probe = Path(tmp) / "probe.c"
            probe.write_text("#include <Python.h>\nint eventbus_probe(void) { return 0; }\n")
            compiler.compile([str(probe)], output_dir=tmp, include_dirs=[sysconfig.get_python_inc()])
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable compiler
        return f"{type(exc).__name__}: {exc}".strip().splitlines()[0]
    return None


def building() -> bool:
    """Whether this run of setup.py builds code (pip also runs it just to read the metadata)."""
    commands = ("build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install")
    return any(command in sys.argv for command in commands)


def compiled_extensions() -> list[Any]:
    if not building():
        return []
    MANIFEST.unlink(missing_ok=True)
    if pure_requested():
        say("EVENTBUS_PURE_PYTHON is set: installing the pure-Python path only")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        say(f"mypyc is not available ({exc}): installing the pure-Python path (same behaviour, slower)")
        return []
    problem = compiler_problem()
    if problem is not None:
        say(f"no working C compiler ({problem}): installing the pure-Python path (same behaviour, slower)")
        return []
    sources = [f"eventbus/{name}.py" for name in HOT_MODULES]
    try:
        extensions = mypycify(
            [
                *sources,
                # The build environment has mypy but not the runtime dependencies' type
                # information; their types only decide how generic the compiled calls into them
                # are, never what the code does. (Strict checking is scripts/check's job.)
                "--ignore-missing-imports",
                "--no-warn-unused-ignores",
                "--no-warn-return-any",
            ],
            group_name="eventbus._speedups",
        )
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypyc exits on a type error
        say(f"mypyc could not compile the hot path ({exc!r}): installing the pure-Python path")
        return []
    hashes = {
        name: hashlib.sha256((HERE / src).read_bytes()).hexdigest()
        for name, src in zip(HOT_MODULES, sources, strict=True)
    }
    MANIFEST.write_text(json.dumps(hashes, indent=1) + "\n")
    say("compiling the hot path with mypyc (" + ", ".join(sources) + ")")
    return list(extensions)


class OptionalBuildExt(build_ext):
    """A compiler that fails part-way leaves a working pure-Python install, not a failed one."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - distutils raises several unrelated types
            MANIFEST.unlink(missing_ok=True)
            say(f"compiling the hot path failed ({exc}): installing the pure-Python path")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
