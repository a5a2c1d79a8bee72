"""``python -m eventbus check`` and ``python -m eventbus streams``: looks at Redis for scripts and people.

``check`` answers "would a runner start here?" without starting one:

1. Redis answers at the URL: PING (and AUTH with the URL's credentials), within ``--connect-timeout``;
   nothing else, so a user allowed only ``+ping`` can run it.
2. With ``--module M``: the module loads and has handlers (else exit 2, like ``run``); its channels
   and patterns can be subscribed to on one connection (an ACL that refuses one is named), and
   its streams are streams or absent (a key of another type would fail ``XREADGROUP``). The
   subscriptions are released at once; nothing is consumed, no group is created.

It does not look at a running process: that is what ``/healthz`` and ``/readyz`` are for.
"""

from __future__ import annotations

import json
import time
from typing import Any

from eventbus._backends import open_backend, resolve_url, wait_until_reachable
from eventbus._backends.resp import PUSH_KINDS
from eventbus._deadletter import DeadLetterStore
from eventbus._errors import EventbusError, LoadError
from eventbus._lag import GroupLag, group_lag
from eventbus._router import Router, load_target, stream_group
from eventbus._runner import connect
from eventbus._settings import DEFAULT_DEAD_LETTER_MAX_BYTES, DEFAULT_DEAD_LETTER_STREAM, ConnectionSettings
from eventbus._stats import BusStats
from eventbus._stream_options import StreamOptions
from eventbus._tables import aligned
from eventbus._urls import redact_url


class CheckFailed(EventbusError):
    """Redis is reachable but the module could not run against it (one line, exit 1)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def check(
    url: str | None,
    connect_timeout: float,
    module: str | None = None,
    *,
    dead_letter_stream: str = DEFAULT_DEAD_LETTER_STREAM,
) -> str:
    """One line saying what was checked; raises (ConnectError, CheckFailed, LoadError) otherwise."""
    router = load_target(module) if module is not None else None  # a typo fails before any wait
    resolved = resolve_url(url).url
    started = time.monotonic()
    # PING (and AUTH) only: all a least-privilege user may be allowed (docs/security.md); nothing
    # else is attempted, not even INFO for the version, so the ACL LOG stays empty.
    await wait_until_reachable(resolved, connect_timeout, quiet=True)
    answered_ms = (time.monotonic() - started) * 1000
    line = f"ok: Redis at {redact_url(resolved)} answered PING in {answered_ms:.1f} ms"
    if router is not None:
        async with connect(url) as bus:
            line += f"; {await _check_module(router, resolved, bus.redis)}"
            line += f"; {await _check_dead_letters(bus.redis, dead_letter_stream)}"
    return line


async def _check_dead_letters(redis: Any, stream: str) -> str:
    """The dead-letter stream is writable (else CheckFailed): failures would be lost otherwise."""
    store = DeadLetterStore(redis, stream, max_bytes=DEFAULT_DEAD_LETTER_MAX_BYTES)
    problems = await store.probe()
    refused = store.budget.refused  # writable, but the ACL refuses what keeps the byte budget exact
    if problems and refused is None:
        raise CheckFailed(problems[0])
    return f"dead letters writable to {stream!r}" + (f" (budget from own writes only: {refused})" if refused else "")


def _ignore_messages(reader: Any) -> list[Any]:
    """A subscriber's sink that drops messages and hands back the replies its commands wait for."""
    others: list[Any] = []
    while (reply := reader.gets()) is not False:
        if not (type(reply) is list and reply[0] in PUSH_KINDS):
            others.append(reply)
    return others


async def _check_module(router: Router, url: str, redis: Any) -> str:
    channels, patterns = router.channels(), router.patterns()
    backend = await open_backend(url, ConnectionSettings(ping_timeout=5.0, embedded=False))
    subscriber = backend.subscriber(BusStats())
    try:
        # The runner's own subscribe path: a refused SUBSCRIBE raises SubscribeError naming it.
        await subscriber.start(_ignore_messages, channels, patterns)
    finally:
        await subscriber.stop()
        await backend.aclose()
    streams = sorted({s.name for s, _ in router.stream_routes()})
    for stream in streams:
        kind = _text(await redis.type(stream))
        if kind not in ("stream", "none"):
            raise CheckFailed(f"{router.name}: key {stream!r} is a {kind}, not a stream")
    parts = [f"{router.name}: {len(router.handlers)} handler(s)"]
    parts.append(f"{len(channels)} channel(s) and {len(patterns)} pattern(s) subscribable")
    if streams:
        parts.append(f"{len(streams)} stream(s) usable")
    sharded = router.sharded_channels()
    if sharded:
        parts.append(f"{len(sharded)} sharded channel(s) not checked")
    return ", ".join(parts)


def stream_groups(router: Router) -> list[tuple[str, str, int]]:
    """(stream, group, max_deliveries) for each ``@on_stream`` subscription of ``router``."""
    groups = []
    for subscription, handler in router.stream_routes():
        options = subscription.stream or StreamOptions()
        groups.append((subscription.name, stream_group(subscription, handler), options.max_deliveries))
    return sorted(groups)


async def stream_figures(target: str, url: str | None, connect_timeout: float) -> list[GroupLag]:
    router = load_target(target)
    groups = stream_groups(router)
    if not groups:
        raise LoadError(f"{router.name} has no @on_stream handlers: no consumer groups to show")
    await wait_until_reachable(resolve_url(url).url, connect_timeout, quiet=True)
    async with connect(url) as bus:
        return [await group_lag(bus.redis, s, g, m) for s, g, m in groups]


def format_table(figures: list[GroupLag]) -> str:
    """A plain table, one row per stream and group."""
    rows = [("STREAM", "GROUP", "LAG", "PENDING", "OLDEST PENDING", "AT MAX DELIVERIES", "CONSUMERS")]
    for f in figures:
        if not f.exists:
            rows.append((f.stream, f.group, "-", "-", "-", "-", "no such group yet"))
            continue
        lag = "?" if f.lag is None else f"{f.lag}{'' if f.lag_exact else '+'}"
        oldest = "-" if f.oldest_pending_idle is None else f"{f.oldest_pending_idle:.1f}s"
        rows.append(
            (
                f.stream,
                f.group,
                lag,
                str(f.pending),
                oldest,
                f"{f.exhausted} (max {f.max_deliveries})",
                str(f.consumers),
            )
        )
    return "\n".join(aligned(rows))


def figures_json(figures: list[GroupLag]) -> str:
    return json.dumps(
        [
            {
                "stream": f.stream,
                "group": f.group,
                "exists": f.exists,
                "lag": f.lag,
                "lag_exact": f.lag_exact,
                "pending": f.pending,
                "oldest_pending_seconds": f.oldest_pending_idle,
                "at_max_deliveries": f.exhausted,
                "max_deliveries": f.max_deliveries,
                "consumers": f.consumers,
            }
            for f in figures
        ]
    )
