"""Collecting marked handlers into a router: the one place load-time errors come from."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from eventbus._errors import ConfigError, LoadError
from eventbus._payloads import OPTIONAL_PAYLOAD_LIBRARIES, Decoder, PayloadPlan, plan_call
from eventbus._subscription import HOOK_MARK, HandlerOptions, HandlerSpec, Subscription, spec_of
from eventbus.middleware import Middleware, check_chain


@dataclass(frozen=True, slots=True)
class Handler:
    """A handler function with its resolved name, subscriptions and options."""

    name: str
    func: Callable[..., Any]
    subscriptions: tuple[Subscription, ...]
    options: HandlerOptions
    is_async: bool
    # The whole chain around the handler, outermost first: the router's (module) middleware, then
    # the handler's own. The runner puts its global middleware in front (eventbus.middleware).
    middleware: tuple[Middleware, ...] = ()
    payload: PayloadPlan | None = None  # None: the handler takes the raw Message (a list of them with batch=)


class Router:
    """The handlers and lifecycle hooks of one application.

    Build it from a module (``Router.from_module``), a list of functions (``Router(funcs)``), or
    let :func:`load_target` resolve a ``"pkg.mod"`` / ``"pkg.mod:attr"`` string. Validation
    happens here, once: duplicate names and non-handlers fail before anything connects.
    ``middleware`` wraps every handler added to this router (a module's ``middleware = [...]``
    list becomes this), outside each handler's own.
    """

    def __init__(
        self,
        functions: Iterable[Callable[..., Any]] = (),
        *,
        name: str = "app",
        middleware: Sequence[Middleware] = (),
    ) -> None:
        self.name = name
        try:
            self.middleware = check_chain(middleware, f"router {name!r}")
        except ConfigError as exc:
            raise LoadError(str(exc)) from None
        self.handlers: list[Handler] = []
        self.startup: list[Callable[..., Any]] = []
        self.shutdown: list[Callable[..., Any]] = []
        # One decoder per payload type, shared by the handlers that take it (see eventbus._payloads).
        self._decoders: dict[Any, Decoder] = {}
        for func in functions:
            self.add(func)

    def add(self, func: Callable[..., Any]) -> None:
        """Add a marked handler or hook; anything else is a load error."""
        hook = getattr(func, HOOK_MARK, None)
        if hook is not None:
            if inspect.isclass(func):
                raise LoadError(f"{_describe(func)} is a class: @on_{hook} decorates a function `(ctx)`")
            _check_call(func, ("ctx",), f"{hook} hook {_default_name(func)}")
            hooks = self.startup if hook == "startup" else self.shutdown
            if func not in hooks:
                hooks.append(func)
            return
        spec = spec_of(func)
        if spec is None:
            raise LoadError(f"{_describe(func)} is not a handler: decorate it with @on or @on_pattern")
        if inspect.isclass(func):
            # Calling a class with (msg, ctx) would build an instance per message and run nothing.
            raise LoadError(
                f"{_describe(func)} is a class: @on/@on_pattern decorate a function (or method) `(msg, ctx)`"
            )
        if any(h.func is func for h in self.handlers):
            return
        name = spec.options.name or _default_name(func)
        if any(h.name == name for h in self.handlers):
            raise LoadError(f"duplicate handler name {name!r}: give one of them @on(..., name='...')")
        # A callable object whose __call__ is async counts as async too.
        is_async = inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(type(func).__call__)
        chain = (*self.middleware, *spec.options.middleware)
        batch = spec.options.batch is not None
        payload = plan_call(func, self._decoders, name, batch=batch)
        first = "msgs" if batch else "msg"
        call = (
            (first, "ctx") if payload is None else ("payload", "ctx", first) if payload.envelope else ("payload", "ctx")
        )
        _check_call(func, call, f"handler {name}")
        options = _resume_options(name, spec) if spec.options.resume else _recovering_options(name, spec)
        handler = Handler(name, func, spec.subscriptions, options, is_async, chain, payload)
        self._add_handler(handler)

    def _add_handler(self, handler: Handler) -> None:
        _check_stream_groups(handler, self.handlers)
        self.handlers.append(handler)

    def include(self, other: Router) -> None:
        """Merge another router's handlers and hooks into this one.

        Its handlers keep their middleware; this router's own is put around it.
        """
        for handler in other.handlers:
            if any(h.func is handler.func for h in self.handlers):
                continue
            if any(h.name == handler.name for h in self.handlers):
                raise LoadError(f"duplicate handler name {handler.name!r}: give one of them @on(..., name='...')")
            self._add_handler(replace(handler, middleware=(*self.middleware, *handler.middleware)))
        for hook in (*other.startup, *other.shutdown):
            self.add(hook)

    @classmethod
    def from_module(cls, module: ModuleType) -> Router:
        """Every marked handler and hook defined in or imported into ``module``."""
        # A module-level `middleware = [...]` wraps every handler of the module (a module of that
        # name, as after `from eventbus import middleware`, is not a list of middleware).
        chain = getattr(module, "middleware", None)
        router = cls(name=module.__name__, middleware=() if chain is None or isinstance(chain, ModuleType) else chain)
        for value in list(vars(module).values()):
            if spec_of(value) is not None or getattr(value, HOOK_MARK, None) is not None:
                router.add(value)
        if not router.handlers:
            raise LoadError(f"module {module.__name__!r} defines no handlers (functions marked with @on/@on_pattern)")
        return router

    def routes(self) -> Iterator[tuple[Subscription, Handler]]:
        for handler in self.handlers:
            for subscription in handler.subscriptions:
                yield subscription, handler

    def channels(self) -> list[str]:
        return sorted({s.name for s, _ in self.routes() if s.kind == "channel"})

    def patterns(self) -> list[str]:
        return sorted({s.name for s, _ in self.routes() if s.kind == "pattern"})

    def sharded_channels(self) -> list[str]:
        return sorted({s.name for s, _ in self.routes() if s.kind == "sharded"})

    def stream_routes(self) -> list[tuple[Subscription, Handler]]:
        return [(s, h) for s, h in self.routes() if s.kind == "stream"]


def stream_group(subscription: Subscription, handler: Handler) -> str:
    """The consumer group a stream subscription reads through: its own, else the handler's name."""
    group = subscription.stream.group if subscription.stream is not None else None
    return group or handler.name


def _check_stream_groups(new: Handler, existing: list[Handler]) -> None:
    # Two handlers in one group would split the entries between them, each seeing only some.
    taken = {(s.name, stream_group(s, h)): h.name for h in existing for s in h.subscriptions if s.kind == "stream"}
    for sub in new.subscriptions:
        if sub.kind == "stream" and (sub.name, stream_group(sub, new)) in taken:
            other = taken[(sub.name, stream_group(sub, new))]
            raise LoadError(
                f"handlers {other!r} and {new.name!r} both read stream {sub.name!r} in group "
                f"{stream_group(sub, new)!r}: each would get only part of the entries; give them different groups"
            )


def load_target(target: Any) -> Router:
    """Resolve what a user named into a Router.

    Accepted: a Router, a module, a list/tuple of handler functions, a single handler, or a string
    ``"pkg.mod"`` / ``"pkg.mod:attr"`` where attr names any of those.
    """
    if isinstance(target, Router):
        if not target.handlers:
            raise LoadError(f"router {target.name!r} has no handlers")
        return target
    if isinstance(target, ModuleType):
        return Router.from_module(target)
    if isinstance(target, str):
        return load_target(_import_target(target))
    if isinstance(target, (list, tuple)):
        router = Router(target)
        if not router.handlers:
            raise LoadError("the list of handlers is empty")
        return router
    if callable(target):
        return Router([target])
    raise LoadError(f"cannot load handlers from {target!r}: expected a module, router, list or handler")


def parse_target(spec: str) -> tuple[str, str]:
    """``"pkg.mod[:attr]"`` as (module, attr); attr is "" when absent. LoadError for what cannot be one."""
    module_name, colon, attr = spec.partition(":")
    if module_name.endswith(".py") or "/" in module_name or os.sep in module_name:
        dotted, root = dotted_name(module_name)
        where = "" if root == Path.cwd().resolve() else f" (run from {root}, or put it on PYTHONPATH)"
        suggestion = dotted + (colon + attr if attr else "")
        raise LoadError(f"{spec!r} is a file path, not a module name: did you mean {suggestion}?{where}")
    if not module_name:
        raise LoadError(f"invalid target {spec!r}: expected 'package.module' or 'package.module:attr'")
    if colon and not attr:
        raise LoadError(
            f"invalid target {spec!r}: nothing after ':'; name the Router or list ('{module_name}:router') "
            f"or drop the ':' to load every handler of the module"
        )
    return module_name, attr


def dotted_name(path: str) -> tuple[str, Path]:
    """The module name of a ``.py`` file path, and the folder it is importable from.

    Under the current directory (which ``run`` puts on sys.path): the path below it, so namespace
    packages count. Elsewhere: up through the folders that hold an ``__init__.py``.
    """
    file = Path(path).resolve()
    cwd = Path.cwd().resolve()
    stem = [] if file.stem == "__init__" else [file.stem]
    if file.is_relative_to(cwd):
        parts = [*file.parent.relative_to(cwd).parts, *stem]
        return ".".join(parts) or file.parent.name, cwd
    root, parts = file.parent, stem
    while (root / "__init__.py").is_file() and root.parent != root:
        root, parts = root.parent, [root.name, *parts]
    return ".".join(parts) or file.parent.name, root


def _import_target(spec: str) -> Any:
    module_name, attr = parse_target(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise LoadError(f"module {module_name!r} not found (is it on sys.path? cwd is added)") from None
        if exc.name in OPTIONAL_PAYLOAD_LIBRARIES:
            # A module of typed handlers whose payload library is missing: say how to get it.
            raise LoadError(
                f"module {module_name!r} needs {exc.name}, which is not installed: pip install 'eventbus[{exc.name}]'"
            ) from None
        raise LoadError(f"module {module_name!r} failed to import: {_describe_error(exc)}") from exc
    except Exception as exc:
        raise LoadError(f"module {module_name!r} failed to import: {_describe_error(exc)}") from exc
    if not attr:
        return module
    try:
        return getattr(module, attr)
    except AttributeError:
        raise LoadError(f"module {module_name!r} does not define {attr!r}") from None


def raised_at(exc: BaseException) -> str:
    """``file:line`` where ``exc`` was raised, past the import machinery's own frames.

    A missing import three modules deep names the module whose ``import`` failed, not the target;
    a SyntaxError, the line that does not parse. When it was raised in a library (called at import
    time), the application's own line that called it comes first.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown(exc.filename)}:{exc.lineno}"
    frames = [
        f"{_shown(f.filename)}:{f.lineno}"
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen ") and not f.filename.startswith(_IMPORTLIB)
    ]
    local = [
        f"{_shown(f.filename)}:{f.lineno}" for f in traceback.extract_tb(exc.__traceback__) if _is_local(f.filename)
    ]
    if not frames:
        return "<unknown>"
    if not local or local[-1] == frames[-1]:
        return frames[-1]
    return f"{local[-1]} (raised in {frames[-1]})"


def _describe_error(exc: BaseException) -> str:
    message = exc.msg if isinstance(exc, SyntaxError) else str(exc)
    return f"{raised_at(exc)}: {type(exc).__name__}: {message}"


_IMPORTLIB = os.path.dirname(importlib.__file__)
_THIS_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def _is_local(filename: str) -> bool:
    """The application's own code: under the current directory, not an installed package, not us."""
    path = os.path.abspath(filename)
    if path.startswith(_THIS_PACKAGE) or {"site-packages", "dist-packages"} & set(Path(path).parts):
        return False
    return not os.path.relpath(path, Path.cwd()).startswith("..")


def _shown(filename: str) -> str:
    relative = os.path.relpath(os.path.abspath(filename), Path.cwd())
    return filename if relative.startswith("..") else relative


def _check_call(func: Callable[..., Any], args: tuple[str, ...], what: str) -> None:
    """Refuse, at load time, a function that cannot be called the way the runner will call it.

    Otherwise each message would fail with a TypeError (and be dead-lettered) instead of the
    module failing once, before anything connects.
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return  # no signature to read (some builtins): the first call will tell
    try:
        signature.bind(*args)
    except TypeError as exc:
        params = [p.replace(annotation=inspect.Parameter.empty) for p in signature.parameters.values()]
        takes = signature.replace(parameters=params, return_annotation=inspect.Signature.empty)
        raise LoadError(
            f"{what}{takes} cannot be called as ({', '.join(args)}): {exc}; handlers take (msg, ctx), "
            "batch handlers (msgs, ctx), typed ones (payload: T, ctx) with an optional third `msg: Message`; "
            "hooks take (ctx)"
        ) from None


def _recovering_options(name: str, spec: HandlerSpec) -> HandlerOptions:
    """A handler's options, checked: on a recoverable channel its inbox may drop the newest message
    (read back in order from the history once there is room) or pause, but not evict queued ones."""
    recoverable = [sub.name for sub in spec.subscriptions if sub.recoverable]
    if recoverable and spec.options.overflow == "drop_oldest":
        raise LoadError(
            f"handler {name}: overflow='drop_oldest' would evict queued messages of the recoverable channel "
            f"{recoverable[0]!r}, which it could only read back out of order; use overflow='drop_newest' (the "
            "default: a dropped message is read back from the history, in order, once the inbox has room) or 'pause'"
        )
    return spec.options


def _resume_options(name: str, spec: HandlerSpec) -> HandlerOptions:
    """A resumed handler's options, checked: it subscribes to recoverable channels only, and its
    inbox pauses reading when full (the default for it) rather than drop what it must not lose."""
    for sub in spec.subscriptions:
        if not sub.recoverable:
            what = "a pattern" if sub.kind == "pattern" else "a stream" if sub.kind == "stream" else "a plain channel"
            raise LoadError(
                f"handler {name}: resume=True needs recoverable channels, and {sub.name!r} is {what}; "
                f"subscribe with @on(Channel({sub.name!r}, history=N), resume=True)"
            )
    options = spec.options
    if "overflow" not in spec.explicit_options:
        return replace(options, overflow="pause")
    if options.overflow == "drop_oldest":
        raise LoadError(
            f"handler {name}: resume=True cannot evict queued messages (overflow='drop_oldest'): its position "
            "would stop at the first evicted one; use overflow='pause' (the default with resume) or 'drop_newest'"
        )
    return options


def _default_name(func: Callable[..., Any]) -> str:
    # "Class.method" stays qualified; a function defined inside another loses the "<locals>" noise.
    qualname = getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)
    return str(qualname).rpartition("<locals>.")[2]


def _describe(obj: Any) -> str:
    name = getattr(obj, "__qualname__", None)
    return repr(name) if name else repr(obj)


def ensure_cwd_on_path() -> None:
    """Let ``python -m eventbus run mymod`` find mymod.py in the current directory, like arq does."""
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
