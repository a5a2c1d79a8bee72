"""What the dashboard shows and does, read from Redis and done through eventbus's own rules.

Nothing here is kept between requests: processes come from their heartbeats
(:mod:`eventbus._heartbeat`), stream groups from Redis (:mod:`eventbus._lag`), dead letters from
the dead-letter stream. Replay goes through :mod:`eventbus._replay`'s trust boundary with the
handler modules the operator named (``--module``), never with a module an entry or a heartbeat
names: both are written by whoever may write to Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventbus._deadletter import DeadLetter, DeadLetterStore
from eventbus._errors import ConfigError
from eventbus._heartbeat import PROCESSES, read_processes
from eventbus._lag import GroupLag, group_lag
from eventbus._masking import Mask
from eventbus._replay import Outcome, replay_dead_letters, replay_verdict
from eventbus._router import Router

log = logging.getLogger("eventbus.dashboard")
GONE_KEPT = 3600  # seconds a gone or stopped process stays listed; then the dashboard forgets it
SHOWN = 200  # dead letters shown at once
GROUPS_SHOWN = 100  # stream groups read for one page
SCANNED = 10_000  # dead letters a filtered page looks through (the newest first)
PAGE = 500  # dead letters read at once
ERROR_SHOWN = 2000  # characters of an error shown
CHANNELS_SHOWN = 500  # recoverable channels listed at once
# The recovery counters shown per channel (eventbus._stats.RecoveryStats), in the table's order.
CHANNEL_FIGURES = (
    *("recovered", "unrecovered", "history_lost", "foreign", "resumed", "unclean_resumes"),
    *("recoveries", "recovery_seconds"),
)
# Counters that say messages were lost or handled twice: shown as a warning.
CHANNEL_TROUBLE = ("unrecovered", "history_lost", "unclean_resumes")


@dataclass(frozen=True, slots=True)
class App:
    """A handler module the operator named: where its entries may be replayed, how its payloads show."""

    router: Router
    mask: Mask | None = None


@dataclass(frozen=True, slots=True)
class Filter:
    """Dead letters whose handler, channel and error contain these texts (case-insensitive); empty: any."""

    handler: str = ""
    channel: str = ""
    error: str = ""

    def matches(self, letter: DeadLetter) -> bool:
        return all(
            want.lower() in have.lower()
            for want, have in (
                (self.handler, letter.handler),
                (self.channel, letter.channel),
                (self.error, letter.error),
            )
            if want
        )

    @property
    def empty(self) -> bool:
        return not (self.handler or self.channel or self.error)


@dataclass(frozen=True, slots=True)
class Shown:
    """One dead letter as shown: payload through the app's mask, and whether replay would take it."""

    letter: DeadLetter
    payload: str
    replay: str | None  # None: replay would send it back; else why not


@dataclass(slots=True)
class ChannelFigures:
    """One recoverable channel: its counters summed over the running processes, and each one's."""

    name: str
    total: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CHANNEL_FIGURES, 0.0))
    by_process: list[tuple[dict[str, Any], dict[str, float]]] = field(default_factory=list)

    @property
    def trouble(self) -> bool:
        return any(self.total[name] for name in CHANNEL_TROUBLE)


@dataclass(slots=True)
class Channels:
    """The recoverable channels of the running processes, as far as their heartbeats carry them."""

    shown: list[ChannelFigures]
    count: int  # channels found (more than shown past CHANNELS_SHOWN)
    capped: list[dict[str, Any]]  # processes whose heartbeat carries only part of their channels


def recoverable_channels(processes: Sequence[dict[str, Any]]) -> Channels:
    """Per channel, summed over the running processes: those with a problem first, then by name.

    Each process counts since it started, so the sums are since the running processes started.
    """
    found: dict[str, ChannelFigures] = {}
    capped = []
    for process in processes:
        channels = process.get("channels")
        if not process["alive"] or not isinstance(channels, dict):
            continue
        if _number(process.get("channels_total")) > len(channels):
            capped.append(process)
        for name, counters in channels.items():
            if not isinstance(counters, dict):
                continue
            figures = {key: _number(counters.get(key)) for key in CHANNEL_FIGURES}
            channel = found.get(name)
            if channel is None:
                channel = found[name] = ChannelFigures(name)
            channel.by_process.append((process, figures))
            for key, value in figures.items():
                channel.total[key] += value
    ordered = sorted(found.values(), key=lambda c: (not c.trouble, c.name))
    return Channels(ordered[:CHANNELS_SHOWN], len(found), capped)


class State:
    """Reads and acts on one Redis (``redis``: a redis.asyncio client, or a cluster's)."""

    def __init__(self, redis: Any, dead_letter_stream: str, apps: Sequence[App]) -> None:
        self.redis = redis
        self.store = DeadLetterStore(redis, dead_letter_stream)
        self.apps = list(apps)

    # -- processes and streams ----------------------------------------------------------------

    async def processes(self) -> list[dict[str, Any]]:
        """Every process that beat within :data:`GONE_KEPT` seconds, alive ones first."""
        found = await read_processes(self.redis)
        now = time.time()
        old = [p["id"] for p in found if not p["alive"] and now - _number(p.get("ts")) > GONE_KEPT]
        if old:
            try:
                await self.redis.hdel(PROCESSES, *old)
            except Exception as exc:  # noqa: BLE001 - a read-only user: they are hidden all the same
                log.debug("gone processes not forgotten: %s: %s", type(exc).__name__, exc)
        return [p for p in found if p["id"] not in old]

    async def groups(self, processes: Sequence[dict[str, Any]]) -> list[GroupLag]:
        """The consumer groups the live processes' handlers read, with their figures."""
        wanted: dict[tuple[str, str], int] = {}
        for process in processes:
            if not process["alive"]:
                continue
            for handler in _list(process.get("handlers")):
                for stream in _list(handler.get("streams") if isinstance(handler, dict) else None):
                    if isinstance(stream, dict) and isinstance(stream.get("stream"), str):
                        key = (stream["stream"], str(stream.get("group", "")))
                        wanted[key] = int(_number(stream.get("max_deliveries")) or 1)
        # Heartbeats are anyone's to write: a bounded number of groups, and a key that is no stream skipped.
        chosen = sorted(wanted.items())[:GROUPS_SHOWN]
        found = await asyncio.gather(*(group_lag(self.redis, s, g, m) for (s, g), m in chosen), return_exceptions=True)
        groups = []
        for ((stream, group), _), figures in zip(chosen, found, strict=True):
            if isinstance(figures, BaseException):
                log.warning("dashboard: no figures for %r group %r: %s", stream, group, figures)
            else:
                groups.append(figures)
        return groups

    # -- dead letters -------------------------------------------------------------------------

    async def dead_letters(self, wanted: Filter) -> tuple[list[Shown], int]:
        """The newest :data:`SHOWN` entries matching ``wanted`` (among the newest :data:`SCANNED`),
        and the stream's length."""
        total = int(await self.redis.xlen(self.store.stream))
        shown: list[Shown] = []
        async for letter in self._newest(SCANNED):
            if wanted.matches(letter):
                shown.append(self.show(letter))
                if len(shown) >= SHOWN:
                    break
        return shown, total

    async def _newest(self, limit: int) -> Any:
        """Entries newest first, payloads cut (:meth:`DeadLetterStore.summaries`), at most ``limit``."""
        end = "+"
        seen = 0
        while seen < limit:
            entries = await self.redis.xrevrange(self.store.stream, end, "-", count=PAGE) or []
            if not entries:
                return
            ids = [_text(entry_id) for entry_id, _ in entries]
            # Summaries read forward: from the oldest id of this page, as many as the page holds.
            page = await self.store.summaries(count=len(ids), start=ids[-1], payloads=True)
            by_id = {letter.id: letter for letter in page}
            for entry_id in ids:
                letter = by_id.get(entry_id)
                if letter is not None:
                    seen += 1
                    yield letter
            if len(entries) < PAGE:
                return
            end = f"({ids[-1]}"

    def show(self, letter: DeadLetter) -> Shown:
        app = self.app_for(letter)
        mask = app.mask if app is not None else None
        if mask is not None:
            try:
                payload = mask(letter.payload)
            except Exception as exc:  # noqa: BLE001 - a failing mask shows nothing of the payload
                payload = f"(the payload mask failed: {type(exc).__name__})"
        else:
            payload = letter.payload.decode("utf-8", "backslashreplace")
        if letter.size > len(letter.payload):
            payload += f"... ({letter.size} bytes in all)"
        return Shown(letter, payload, self.refusal(letter))

    def app_for(self, letter: DeadLetter) -> App | None:
        """The named module with the entry's handler, the first whose handler takes it back if several."""
        having = [app for app in self.apps if any(h.name == letter.handler for h in app.router.handlers)]
        for app in having:
            if replay_verdict(app.router, letter).refusal is None:
                return app
        return having[0] if having else None

    def refusal(self, letter: DeadLetter) -> str | None:
        if not self.apps:
            return "no handler module: start the dashboard with --module MODULE to replay"
        app = self.app_for(letter)
        if app is None:
            names = ", ".join(a.router.name for a in self.apps)
            return f"no handler named {letter.handler!r} in {names}"
        return replay_verdict(app.router, letter).refusal

    async def matching(self, wanted: Filter) -> list[str]:
        """The ids of every entry matching ``wanted``, oldest first: the whole stream, a page at a
        time, without the payloads (memory: a page of cut values)."""
        ids: list[str] = []
        start = "-"
        while True:
            page = await self.store.summaries(count=PAGE, start=start)
            ids.extend(letter.id for letter in page if wanted.matches(letter))
            if len(page) < PAGE:
                return ids
            start = f"({page[-1].id}"

    async def replay(self, ids: Sequence[str]) -> list[Outcome]:
        """Replay each entry through the trust boundary; a replayed entry leaves the stream."""
        outcomes: list[Outcome] = []
        for entry_id in dict.fromkeys(ids):
            letter = await self.store.get(entry_id)
            if letter is None:
                outcomes.append(Outcome(entry_id, "skipped", detail="no longer in the stream"))
                continue
            app = self.app_for(letter)
            if app is None:
                outcomes.append(Outcome(entry_id, "refused", letter.handler, detail=self.refusal(letter) or ""))
                continue
            try:
                report = await replay_dead_letters(self.store, app.router, ids=[entry_id])
            except ConfigError:  # taken by another replay meanwhile
                outcomes.append(Outcome(entry_id, "skipped", letter.handler, detail="no longer in the stream"))
                continue
            outcomes.extend(report.outcomes)
        return outcomes

    async def delete(self, ids: Sequence[str]) -> int:
        removed = 0
        for start in range(0, len(ids), PAGE):
            removed += await self.store.delete(*ids[start : start + PAGE])
        return removed


def summarize(outcomes: Sequence[Outcome]) -> str:
    """``2 replayed, 1 refused (handler 'x' does not subscribe ...)``."""
    if not outcomes:
        return "nothing to replay"
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.action] = counts.get(outcome.action, 0) + 1
    text = ", ".join(f"{n} {action}" for action, n in counts.items())
    reasons = sorted({o.detail for o in outcomes if o.action != "replayed" and o.detail})
    return text + (f" ({'; '.join(reasons[:3])})" if reasons else "")


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
