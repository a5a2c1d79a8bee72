"""Runs eventbus's ``apps.olympics`` unchanged, with each handler wrapped to count finished messages.

The wrapper keeps the handler's mark (``functools.wraps`` copies ``__eventbus__``), its name and
whether it is ``async``, so eventbus routes, queues and runs it exactly as it would the original;
the count is taken after the handler returns, so "done" means its Redis work is done too.
Run as ``python -m benchmarks.olympics.eventbus_app SPEC.json`` (the spec's handler names are the
app's handler names, see ``app_handlers``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import os
import sys
import threading
import types
from typing import Any

import eventbus
from benchmarks.contenders.recorder import Body, load
from benchmarks.spec import HandlerDef

APP = "apps.olympics"


def app_handlers(expected: dict[str, int] | None = None) -> list[HandlerDef]:
    """The app's handlers as spec entries (expected counts filled in by the caller)."""
    router = eventbus.Router.from_module(importlib.import_module(APP))
    out = []
    for h in router.handlers:
        kinds = {s.kind for s in h.subscriptions}
        if len(kinds) != 1:
            raise ValueError(f"{APP}: handler {h.name} mixes channels and patterns; the benchmark can't count it")
        out.append(HandlerDef(h.name, kinds.pop(), [s.name for s in h.subscriptions], (expected or {}).get(h.name, 0)))
    return out


def counted(func: Any, done: Body, is_async: bool, batch: bool = False) -> Any:
    """``func`` counting each message it finished: one per call, or each of a batch's.

    The wrapper takes whatever the handler takes (eventbus reads the signature through
    ``functools.wraps``: typed payloads, the envelope, a batch's list)."""

    def finished(first: Any) -> None:
        for _ in range(len(first) if batch else 1):
            done(b"")

    if is_async:

        @functools.wraps(func)
        async def async_wrapper(first: Any, *rest: Any) -> None:
            await func(first, *rest)
            finished(first)

        return async_wrapper
    lock = threading.Lock()  # sync handlers run in worker threads, maybe several at once

    @functools.wraps(func)
    def sync_wrapper(first: Any, *rest: Any) -> None:
        func(first, *rest)
        with lock:
            finished(first)

    return sync_wrapper


async def main() -> None:
    spec, rec = load(sys.argv, "eventbus_olympics")
    app = importlib.import_module(APP)
    router = eventbus.Router.from_module(app)
    wrapped = {
        h.func: counted(h.func, rec.body(h.name), h.is_async, h.options.batch is not None) for h in router.handlers
    }
    module = types.ModuleType(app.__name__, app.__doc__)
    for name, value in vars(app).items():
        with contextlib.suppress(TypeError):  # an unhashable attribute is not a handler
            value = wrapped.get(value, value)
        setattr(module, name, value)
    runner = eventbus.Runner(module, url=spec.url)
    await runner.serve()


if __name__ == "__main__":
    # The app's one-command demo would simulate its own purchases on startup: listeners only.
    os.environ["OLYMPICS_SIMULATE"] = "0"
    # The alerts are the app's output; like the tutorial's prints, the benchmark discards them.
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    asyncio.run(main())
