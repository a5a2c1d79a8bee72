"""Middleware: plain async functions wrapped around a handler call, composed once at start-up.

A middleware is ``async def mw(msg, ctx, call_next)``; ``await call_next(msg, ctx)`` runs the rest
of the chain (the next middleware, at the end the handler) and returns the handler's result. It
may skip the call (short-circuit), pass another message or context on, or look at the result or
the exception. An exception it raises (or lets through) is a handler failure: retried, then
dead-lettered, by the handler's policy; it never stops the worker.

Where a chain comes from, outermost first:

1. global: ``Runner(..., middleware=[...])`` / ``run --middleware pkg.mod:fn`` (repeatable);
2. the module: a module-level ``middleware = [...]`` list (or ``Router(..., middleware=[...])``);
3. the handler: ``@on(..., middleware=[...])``.

Within each list the first one listed is the outermost (it runs first and sees the outcome last),
as in Watermill. Every attempt of a retried message goes through the whole chain again.

The chain is built once per handler when its worker is created (:func:`compose`); a handler
without middleware is called directly, with no wrapper at all.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from eventbus._context import Context
from eventbus._errors import ConfigError, LoadError
from eventbus._message import Message

Invoke = Callable[[Message, Context], Awaitable[Any]]
Middleware = Callable[[Message, Context, Invoke], Awaitable[Any]]


def describe_middleware(obj: Any) -> str:
    """A middleware's name for people: ``timing``, ``timeout(5)``."""
    return str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or repr(obj)).rpartition(
        "<locals>."
    )[2]


_describe = describe_middleware


def check_middleware(obj: Any, where: str) -> Middleware:
    """``obj`` if it is usable as a middleware, else a one-line :class:`ConfigError` saying why."""
    if not callable(obj):
        raise ConfigError(f"{where}: middleware must be an async function (msg, ctx, call_next), got {obj!r}")
    # A callable object whose __call__ is async counts as async too (as for handlers).
    is_async = inspect.iscoroutinefunction(obj) or inspect.iscoroutinefunction(type(obj).__call__)
    try:
        inspect.signature(obj).bind(None, None, None)
        takes_three = True
    except TypeError:
        takes_three = False
    except ValueError:  # no signature to inspect (a builtin): let the first call tell
        takes_three = True
    if not is_async or not takes_three:
        # The usual slip is naming a factory instead of calling it: middleware=[timeout].
        raise ConfigError(
            f"{where}: {_describe(obj)} is not a middleware: expected an async function taking "
            "(msg, ctx, call_next) (a factory such as timeout must be called: timeout(5))"
        )
    return cast(Middleware, obj)


def check_chain(items: Any, where: str) -> tuple[Middleware, ...]:
    """A list or tuple of middleware, validated, as a tuple.

    An item may also be a ``"pkg.mod:fn"`` spec, as ``run --middleware`` takes it
    (:func:`load_middleware`): settings that came from the command line hold specs, so that a
    ``run --workers`` supervisor can hand them to its workers.
    """
    if items is None:
        return ()
    if not isinstance(items, (list, tuple)):
        raise ConfigError(f"{where}: middleware must be a list of async functions, got {type(items).__name__}")
    return tuple(load_middleware(item) if isinstance(item, str) else check_middleware(item, where) for item in items)


def _link(middleware: Middleware, call_next: Invoke) -> Invoke:
    # Returns the middleware's coroutine itself: no coroutine frame of our own per link.
    return lambda msg, ctx: middleware(msg, ctx, call_next)


def compose(invoke: Invoke, chain: Iterable[Middleware], handler: Any = None) -> Invoke:
    """``invoke`` wrapped in ``chain`` (first = outermost); ``invoke`` itself when the chain is empty.

    A middleware object with a ``for_handler(handler)`` method is asked for the function to use
    for this handler (a :class:`~eventbus._router.Handler`: name, options, subscriptions), so it
    can look at the handler's policy once here instead of on every message (tracing does).
    """
    call = invoke
    for middleware in reversed(tuple(chain)):
        bind = getattr(middleware, "for_handler", None)
        if bind is not None and handler is not None:
            middleware = check_middleware(bind(handler), f"{_describe(middleware)}.for_handler")
        call = _link(middleware, call)
    return call


def load_middleware(spec: str) -> Middleware:
    """Resolve ``"pkg.mod:name"`` (as ``run --middleware`` takes it) to a middleware.

    ``name`` may also be a call of a factory with literal arguments, ``"pkg.mod:timeout(5)"``,
    so the shipped factories work from the command line.
    """
    import ast
    import importlib

    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"--middleware {spec!r}: expected 'package.module:function'")
    name, paren, args_text = attr.partition("(")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise LoadError(f"--middleware {spec!r}: module {module_name!r} not found") from None
        raise LoadError(f"--middleware {spec!r}: module {module_name!r} failed to import: {exc}") from exc
    except LoadError:
        raise
    except Exception as exc:
        raise LoadError(f"--middleware {spec!r}: module failed to import: {type(exc).__name__}: {exc}") from exc
    try:
        obj = getattr(module, name.strip())
    except AttributeError:
        raise LoadError(f"--middleware {spec!r}: module {module_name!r} does not define {name.strip()!r}") from None
    if paren:
        if not args_text.endswith(")"):
            raise LoadError(f"--middleware {spec!r}: unbalanced parentheses")
        try:
            call = ast.parse(f"f({args_text}", mode="eval").body
            assert isinstance(call, ast.Call)
            args = [ast.literal_eval(a) for a in call.args]
            kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        except (SyntaxError, ValueError) as exc:
            raise LoadError(f"--middleware {spec!r}: arguments must be Python literals ({exc})") from None
        try:
            obj = obj(*args, **kwargs)
        except ConfigError as exc:
            raise LoadError(f"--middleware {spec!r}: {exc}") from None
    try:
        return check_middleware(obj, f"--middleware {spec}")
    except ConfigError as exc:
        raise LoadError(str(exc)) from None
