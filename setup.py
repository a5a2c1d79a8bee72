"""Builds eventbus with its hot path compiled by mypyc wherever that can be done.

The metadata lives in pyproject.toml; this file only adds the optional extension modules.
``eventbus/_message.py``, ``_dispatch.py``, ``_worker.py`` and the loop's parts ``_parts.py``,
``_keyed.py`` and ``_batch.py`` (routing a socket read, the inbox hand-off, the ``Message`` type, the worker loop
every handler runs) are compiled unchanged from the same source:
like hiredis for redis-py, the same behaviour, faster. The pure-Python modules stay the
reference and are always installed beside the compiled ones; ``eventbus._hotpath`` picks
which to import.

Compilation is skipped, and the install goes on in pure Python with one line saying why, when
``EVENTBUS_PURE_PYTHON=1`` is set, when mypyc cannot be imported, when no working C compiler
is found, or when the compiler fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
HOT_MODULES = ("_message", "_parts", "_keyed", "_batch", "_dispatch", "_worker")  # keep in step with eventbus/_hotpath.py
# What the build did, for eventbus._hotpath: when compiled, the hash of each source it was
# compiled from (so an edited source is never shadowed by a stale build); when not, why not, so
# `python -m eventbus --version` can give the true reason (pip shows a build's output only with -v).
MANIFEST = HERE / "eventbus" / "_build.json"
# The type check mypyc runs before it compiles must give the same answer in every build
# environment. pip's isolated build has mypy but not the runtime dependencies, and its mypy can
# still see whatever the target environment already has installed: the same sources then checked
# clean on a second install and failed on the first (strict mode refuses a class that subclasses
# an unresolved import such as redis.asyncio.Redis). So the build never reads installed
# packages, treats every third-party import as Any (those types only decide how generic the
# compiled calls into them are, never what the code does), and reports errors only in the
# modules it compiles; strict checking of the whole package is scripts/check's job.
MYPYC_OPTIONS = (
    "--no-site-packages",
    "--ignore-missing-imports",
    "--follow-imports=silent",
    "--no-warn-unused-ignores",
    "--no-warn-return-any",
)


def say(message: str) -> None:
    print(f"eventbus setup: {message}", file=sys.stderr, flush=True)


def record(**outcome: Any) -> None:
    MANIFEST.write_text(json.dumps(outcome, indent=1) + "\n")


def install_pure(reason: str, *, requested: bool = False) -> list[Any]:
    say(f"{reason}: installing the pure-Python path (same behaviour, slower)")
    record(compiled=False, reason=reason, requested=requested)
    return []


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
        return install_pure("built with EVENTBUS_PURE_PYTHON=1", requested=True)
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        return install_pure(f"mypyc is not available ({exc})")
    problem = compiler_problem()
    if problem is not None:
        return install_pure(f"no working C compiler ({problem})")
    sources = [f"eventbus/{name}.py" for name in HOT_MODULES]
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):  # where mypyc prints its type errors
            extensions = mypycify([*sources, *MYPYC_OPTIONS], group_name="eventbus._speedups")
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - mypyc exits on a type error
        errors = [line for line in printed.getvalue().splitlines() if ": error: " in line]
        return install_pure(f"mypyc could not compile the hot path ({errors[0] if errors else repr(exc)})")
    finally:
        sys.stdout.write(printed.getvalue())
    hashes = {
        name: hashlib.sha256((HERE / src).read_bytes()).hexdigest()
        for name, src in zip(HOT_MODULES, sources, strict=True)
    }
    record(compiled=True, sources=hashes)
    say("compiling the hot path with mypyc (" + ", ".join(sources) + ")")
    return list(extensions)


class OptionalBuildExt(build_ext):
    """A compiler that fails part-way leaves a working pure-Python install, not a failed one."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - distutils raises several unrelated types
            install_pure(f"compiling the hot path failed ({exc})")


setup(ext_modules=compiled_extensions(), cmdclass={"build_ext": OptionalBuildExt})
