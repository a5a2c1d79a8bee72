"""The decorators: they only mark a function with what it subscribes to.

Nothing is registered globally at import time; a :class:`~eventbus._router.Router` is built from a
module or a list of functions when a runner starts, so importing a handler module twice, or in a
test, has no side effects.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Literal, TypeVar

from eventbus._batch_options import Batch
from eventbus._channels import Channel
from eventbus._errors import ConfigError
from eventbus._stream_options import STREAM_OPTION_NAMES, StreamOptions
from eventbus.middleware import check_chain

Kind = Literal["channel", "pattern", "sharded", "stream"]
Overflow = Literal["drop_newest", "drop_oldest", "pause"]
OVERFLOW_POLICIES: tuple[str, ...] = ("drop_newest", "drop_oldest", "pause")

# The default memory budget of one handler's inbox. Redis lets a subscriber fall behind by 32 MB
# of protocol data before it disconnects it (client-output-buffer-limit pubsub 32mb 8mb 60); held
# in Python, a message costs at most ~3.3x its protocol size (an empty payload: 30 bytes on the
# wire, ~100 in memory), so 128 MiB holds any backlog a listen() loop survives, whatever the
# message sizes. Measured: 200,000 x 60-byte messages take 31 MiB of it (see docs/semantics.md).
DEFAULT_INBOX_BYTES = 128 * 1024 * 1024

F = TypeVar("F", bound=Callable[..., Any])

MARK = "__eventbus__"
HOOK_MARK = "__eventbus_hook__"


@dataclass(frozen=True, slots=True)
class Subscription:
    """One SUBSCRIBE ("channel"), PSUBSCRIBE ("pattern"), SSUBSCRIBE ("sharded") or consumer group ("stream")."""

    kind: Kind
    name: str
    stream: StreamOptions | None = None  # only for kind "stream"
    # The declaration a handler subscribed with (``@on(Channel(...))``): recoverable if it has history.
    declared: Channel | None = None

    @property
    def recoverable(self) -> bool:
        return self.declared is not None and self.declared.recoverable


@dataclass(frozen=True, slots=True)
class HandlerOptions:
    """How a handler's messages are queued, run and retried.

    concurrency: how many messages the handler works on at once (1 keeps publish order).
    inbox_bytes: the memory budget of the messages waiting for the handler (payload plus ~100
                 bytes of bookkeeping each) before the overflow policy applies.
    inbox_size:  an optional extra cap on how many messages may wait (None: only the budget).
    overflow:    "drop_newest" refuses the arriving message; "drop_oldest" evicts the oldest
                 waiting; "pause" stops reading the connection until the inbox drains to half.
    retries:     extra attempts after a failure (not after :class:`~eventbus.Reject`).
    backoff:     seconds before the first retry; doubles each attempt (with jitter).
    name:        the handler's name in logs, metrics and dead letters (default: qualified name).
    middleware:  async functions ``(msg, ctx, call_next)`` around each call of this handler, first
                 listed outermost; inside the global and the module's (see :mod:`eventbus.middleware`).
    key:         per-key ordering: a function of the (decoded) payload, or the name of one of its
                 fields; messages with equal keys are handled one at a time in delivery order,
                 different keys in parallel up to ``concurrency`` (see eventbus._keyed).
    publishes:   what the handler publishes, {channel: payload type}, for the AsyncAPI document.
    batch:       a :class:`~eventbus.Batch`: the handler takes a list of messages (``list[Message]``,
                 or ``list[Order]`` decoded one by one), closed by size or by time.
    resume:      on recoverable channels (``@on(Channel(..., history=N))``): keep the handler's
                 position in Redis, so that after a restart it first gets what was published while
                 it was down (see docs/recovery.md, "Resuming after a restart").
    """

    concurrency: int = 1
    inbox_bytes: int = DEFAULT_INBOX_BYTES
    inbox_size: int | None = None
    overflow: Overflow = "drop_newest"
    retries: int = 0
    backoff: float = 0.1
    name: str | None = None
    middleware: tuple[Any, ...] = ()
    key: Callable[[Any], Hashable] | str | None = None
    publishes: Mapping[str, Any] | None = None
    batch: Batch | None = None
    resume: bool = False

    @property
    def inbox_limits(self) -> str:
        """The inbox's bounds for people: ``128MiB``, or ``128MiB,500msgs`` with a count cap."""
        budget = f"{self.inbox_bytes / 2**20:g}MiB"
        return budget if self.inbox_size is None else f"{budget},{self.inbox_size}msgs"

    def __post_init__(self) -> None:
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise ConfigError(f"concurrency must be an integer >= 1, got {self.concurrency!r}")
        if not isinstance(self.inbox_bytes, int) or self.inbox_bytes < 1:
            raise ConfigError(f"inbox_bytes must be an integer >= 1 (bytes), got {self.inbox_bytes!r}")
        if self.inbox_size is not None and (not isinstance(self.inbox_size, int) or self.inbox_size < 1):
            raise ConfigError(f"inbox_size must be None or an integer >= 1, got {self.inbox_size!r}")
        if self.overflow not in OVERFLOW_POLICIES:
            raise ConfigError(f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}, got {self.overflow!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ConfigError(f"retries must be an integer >= 0, got {self.retries!r}")
        if not isinstance(self.backoff, (int, float)) or self.backoff < 0:
            raise ConfigError(f"backoff must be a number of seconds >= 0, got {self.backoff!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise ConfigError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.middleware, tuple) or self.middleware:
            # A list is accepted and kept as a tuple, so the options stay hashable and comparable.
            object.__setattr__(self, "middleware", check_chain(self.middleware, "handler option middleware"))
        if self.key is not None and not callable(self.key) and (not isinstance(self.key, str) or not self.key):
            raise ConfigError(f"key must be a function of the payload or a field name, got {self.key!r}")
        if self.publishes is not None:
            if not isinstance(self.publishes, Mapping) or not all(
                isinstance(channel, str) and channel for channel in self.publishes
            ):
                raise ConfigError(f"publishes must map channel names to payload types, got {self.publishes!r}")
            # Frozen and hashable like the other options: a read-only copy the caller cannot change.
            object.__setattr__(self, "publishes", MappingProxyType(dict(self.publishes)))
        if not isinstance(self.resume, bool):
            raise ConfigError(f"resume must be True or False, got {self.resume!r}")
        if self.batch is not None and not isinstance(self.batch, Batch):
            raise ConfigError(
                f"batch must be an eventbus.Batch, such as Batch(max_size=100, max_wait=0.1), got {self.batch!r}"
            )


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """What the decorators attach to a function: its subscriptions and options."""

    subscriptions: tuple[Subscription, ...]
    options: HandlerOptions = field(default_factory=HandlerOptions)
    explicit_options: frozenset[str] = frozenset()


def _mark(
    kind: Kind,
    names: tuple[str | Channel, ...],
    options: dict[str, Any],
    stream: StreamOptions | None = None,
) -> Callable[[F], F]:
    if not names:
        raise ConfigError(f"give at least one {kind}")
    for name in names:
        if isinstance(name, Channel) and kind in ("channel", "sharded"):
            continue
        if not isinstance(name, str) or not name:
            raise ConfigError(f"a {kind} must be a non-empty string, got {name!r}")
    unknown = set(options) - set(HandlerOptions.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown handler option(s): {', '.join(sorted(unknown))}")
    new_options = HandlerOptions(**options)  # validates
    options = {key: getattr(new_options, key) for key in options}  # as stored (a middleware list as a tuple)
    new_subscriptions = tuple(dict.fromkeys(_subscription(kind, name, stream) for name in names))

    def decorate(func: F) -> F:
        if not callable(func):
            raise ConfigError(f"@on/@on_pattern decorate a function, not {func!r}")
        if inspect.isasyncgenfunction(func) or inspect.isgeneratorfunction(func):
            raise ConfigError(f"handler {func.__qualname__} is a generator; it must be a plain (async) def")
        previous: HandlerSpec | None = getattr(func, MARK, None)
        if previous is None:
            spec = HandlerSpec(new_subscriptions, new_options, frozenset(options))
        else:
            # Stacked decorators add subscriptions; options may be given once or identically.
            merged = previous.options
            for key, value in options.items():
                if key in previous.explicit_options and getattr(merged, key) != value:
                    raise ConfigError(f"handler {func.__qualname__}: option {key} given twice with different values")
                merged = replace(merged, **{key: value})
            # Decorators apply bottom-up: keep the order in which they are written.
            subs = tuple(dict.fromkeys((*new_subscriptions, *previous.subscriptions)))
            spec = HandlerSpec(subs, merged, previous.explicit_options | frozenset(options))
        setattr(func, MARK, spec)
        return func

    return decorate


def _subscription(kind: Kind, name: str | Channel, stream: StreamOptions | None) -> Subscription:
    if isinstance(name, Channel):
        return Subscription("sharded" if name.sharded else kind, name.name, None, name)
    return Subscription(kind, name, stream)


def on(*channels: str | Channel, sharded: bool = False, **options: Any) -> Callable[[F], F]:
    """Subscribe the decorated handler to exactly these channels (Redis SUBSCRIBE).

    A ``*`` in a name is just a character here; use :func:`on_pattern` for globs.
    ``sharded=True`` uses sharded pub/sub (SSUBSCRIBE, Redis 7): on a cluster each channel lives on
    the node owning its slot; publish to it with ``publish(..., sharded=True)`` (SPUBLISH).
    A :class:`~eventbus.Channel` declared with ``history`` is recoverable: the handler gets what it
    missed during a reconnect, in order (see docs/recovery.md).
    """
    return _mark("sharded" if sharded else "channel", channels, options)


def on_stream(*streams: str, group: str | None = None, **options: Any) -> Callable[[F], F]:
    """Consume these Redis streams through a consumer group (XREADGROUP), durably.

    Entries are acknowledged after the handler succeeds, reclaimed from dead consumers after
    ``claim_idle`` seconds, and dead-lettered after ``max_deliveries`` failed deliveries. Every
    process running the handler shares the group's work. Stream options (see
    :class:`~eventbus._stream_options.StreamOptions`): consumer, read_count, block, claim_idle,
    max_deliveries, start; the other options are the handler options of :func:`on`, ``batch=``
    included (a :class:`~eventbus.Batch`: the handler takes a list of entries).
    """
    if "batch" in options and isinstance(options["batch"], int) and not isinstance(options["batch"], bool):
        # Before Batch existed, batch= was the entries asked for per read: it keeps that meaning
        # for now, under its own name.
        if "read_count" in options:
            raise ConfigError("give read_count= alone: batch=<int> is its deprecated name")
        warnings.warn(
            "@on_stream(batch=<int>) is deprecated: the entries asked for per XREADGROUP are now read_count=; "
            "batch= takes an eventbus.Batch (the handler then receives a list)",
            DeprecationWarning,
            stacklevel=2,
        )
        options["read_count"] = options.pop("batch")
    stream_options = {key: options.pop(key) for key in STREAM_OPTION_NAMES if key in options}
    return _mark("stream", streams, options, StreamOptions(group=group, **stream_options))


def on_pattern(*patterns: str, **options: Any) -> Callable[[F], F]:
    """Subscribe the decorated handler to every channel matching the globs (Redis PSUBSCRIBE)."""
    return _mark("pattern", patterns, options)


def on_startup(func: F) -> F:
    """Mark ``async def hook(ctx)`` to run once before the runner subscribes."""
    return _hook("startup", func)


def on_shutdown(func: F) -> F:
    """Mark ``async def hook(ctx)`` to run once after the handlers have drained."""
    return _hook("shutdown", func)


def _hook(when: str, func: F) -> F:
    if not callable(func):
        raise ConfigError(f"@on_{when} decorates a function, not {func!r}")
    setattr(func, HOOK_MARK, when)
    return func


def spec_of(func: Any) -> HandlerSpec | None:
    """The subscriptions a function was marked with, or None."""
    spec = getattr(func, MARK, None)
    return spec if isinstance(spec, HandlerSpec) else None
