"""Which asyncio event loop to run on: ``auto`` (uvloop when installed), ``asyncio`` or ``uvloop``.

eventbus itself only uses asyncio's public interface, so it runs on any conforming loop; this
module is only about choosing one for the entry points that create the loop (``python -m
eventbus``, :func:`eventbus.run`). Code that already runs inside a loop (``Runner``,
``eventbus.connect()``, ``TestBus``) uses whatever loop that is. ``auto`` picks uvloop when it
is importable, as uvicorn does, and otherwise the loop ``asyncio.run`` would create.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from eventbus._errors import ConfigError

__all__ = ["LOOP_CHOICES", "describe_loop", "loop_factory", "run"]

LOOP_CHOICES = ("auto", "asyncio", "uvloop")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]
T = TypeVar("T")


def _stdlib_factory() -> LoopFactory:
    # The stdlib's own loop class, explicitly: asyncio.new_event_loop() would follow an installed
    # policy, and after uvloop.install() that is uvloop again.
    event_loop: LoopFactory | None = getattr(asyncio, "EventLoop", None)  # Python 3.13+
    if event_loop is not None:
        return event_loop
    if sys.platform == "win32":  # pragma: no cover - CI runs on Linux
        return asyncio.ProactorEventLoop
    return asyncio.SelectorEventLoop


def _uvloop_factory() -> LoopFactory | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_factory(name: str = "auto") -> LoopFactory:
    """A factory for the loop called ``name``; :class:`ConfigError` if it is unknown or not installed."""
    if name not in LOOP_CHOICES:
        raise ConfigError(f"unknown event loop {name!r}: choose one of {', '.join(LOOP_CHOICES)}")
    if name == "asyncio":
        return _stdlib_factory()
    uvloop_factory = _uvloop_factory()
    if uvloop_factory is not None:
        return uvloop_factory
    if name == "auto":
        # What asyncio.run() would create: a loop policy the application installed still counts.
        return asyncio.new_event_loop
    raise ConfigError("event loop 'uvloop' was asked for but uvloop is not installed: pip install 'eventbus[uvloop]'")


def describe_loop(loop: asyncio.AbstractEventLoop | None = None) -> str:
    """``"uvloop 0.21.0"`` or ``"asyncio (_UnixSelectorEventLoop)"``: for the startup log line."""
    loop = loop or asyncio.get_running_loop()
    cls = type(loop)
    package = cls.__module__.partition(".")[0]
    if package == "uvloop":
        version = getattr(sys.modules.get("uvloop"), "__version__", "")
        return f"uvloop {version}".rstrip()
    if package == "asyncio":
        return f"asyncio ({cls.__name__})"
    return f"{cls.__module__}.{cls.__qualname__}"


def run(main: Coroutine[Any, Any, T], loop: str = "auto") -> T:
    """``asyncio.run(main)`` on the loop called ``loop`` (see :func:`loop_factory`)."""
    try:
        factory = loop_factory(loop)
    except BaseException:
        main.close()  # never awaited: close it, or Python warns about it
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
