"""Replaying dead letters, only to where their handler reads from.

The trust model. Every runner may append to its dead-letter stream (it must, to dead-letter), so
an entry is only as trustworthy as the least trusted process that can write there, while replay
is run by an operator whose permissions are usually broader. An entry therefore never decides
where it goes: replay loads the handler code the operator names (``--module``) and sends an entry
back only to a channel its handler subscribes to, a channel matching one of its handler's
patterns, or a stream its handler consumes; every other entry is refused and listed, and stays in
the stream. A malformed entry (a required field missing or not a number) was not written by
eventbus and is refused too. An entry whose ``stream`` and ``channel`` fields disagree is refused
(eventbus writes a stream entry's stream name in both).

Each entry is taken off the stream (``XDEL``) before it is sent: XDEL says how many entries it
removed, so of two replays racing for one entry exactly one sends it. When sending fails (an ACL
that refuses the channel, Redis going away), the entry is written back (with a new id) and the
failure is reported with both ids. ``keep=True`` sends without taking entries off the stream;
``dry_run=True`` only judges.

:func:`replay` is what ``python -m eventbus dead-letters replay`` runs, for any other front end
(a dashboard) to call the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus._channels import Channel
from eventbus._deadletter import DeadLetter, DeadLetterStore
from eventbus._errors import ConfigError
from eventbus._glob import glob_match
from eventbus._history import RedisHistory
from eventbus._names import encode_name
from eventbus._router import Router

Action = Literal["replayed", "would replay", "refused", "failed", "skipped", "not attempted"]
PAGE = 32  # entries read at once by replay of all entries (memory: a page of payloads)
# Failures that mean Redis is gone rather than that one entry could not be sent: stop there.
_LOST = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, slots=True)
class Target:
    """Where an entry goes back: PUBLISH to a channel, SPUBLISH to a sharded one, XADD to a stream."""

    kind: Literal["channel", "sharded", "stream"]
    name: str
    # The recoverable Channel the handler subscribed with: the entry goes back through its history,
    # so that it is recovered after a gap, as any message of the channel is.
    declared: Channel | None = None

    def __str__(self) -> str:
        return f"{'sharded channel' if self.kind == 'sharded' else self.kind} {self.name!r}"


def claimed_target(letter: DeadLetter) -> tuple[Target | None, str | None]:
    """Where the entry's own fields say it goes, and why they cannot be taken at their word (or None).

    What ``dead-letters list`` shows; replay then checks it against the handler (:func:`replay_verdict`).
    """
    if letter.stream is not None:
        target = Target("stream", letter.stream)
        if letter.channel != letter.stream:
            # eventbus writes a stream entry's stream name as its channel too.
            return target, f"its channel field says {letter.channel!r}"
        return target, None
    if not letter.channel:
        return None, "it names no channel"
    return Target("channel", letter.channel), None


@dataclass(frozen=True, slots=True)
class Verdict:
    """Where ``letter`` may go back (``target``), or why not (``refusal``)."""

    letter: DeadLetter
    target: Target | None
    refusal: str | None = None


def replay_verdict(router: Router, letter: DeadLetter) -> Verdict:
    """Check ``letter`` against the handler code in ``router`` (see the module docstring)."""
    claimed, inconsistency = claimed_target(letter)
    if letter.problems:
        return Verdict(letter, claimed, f"malformed entry ({'; '.join(letter.problems)})")
    if inconsistency is not None or claimed is None:
        return Verdict(letter, claimed, f"inconsistent entry: {inconsistency}")
    handler = next((h for h in router.handlers if h.name == letter.handler), None)
    if handler is None:
        return Verdict(letter, claimed, f"{router.name} has no handler named {letter.handler!r}")
    if claimed.kind == "stream":
        if any(s.kind == "stream" and s.name == claimed.name for s in handler.subscriptions):
            return Verdict(letter, claimed)
        return Verdict(letter, claimed, f"handler {handler.name!r} does not consume stream {claimed.name!r}")
    for subscription in handler.subscriptions:
        if subscription.name == claimed.name and subscription.kind in ("channel", "sharded"):
            kind: Literal["channel", "sharded"] = "sharded" if subscription.kind == "sharded" else "channel"
            declared = subscription.declared if subscription.recoverable else None
            return Verdict(letter, Target(kind, claimed.name, declared))
    channel = encode_name(claimed.name)
    for subscription in handler.subscriptions:
        if subscription.kind == "pattern" and glob_match(encode_name(subscription.name), channel):
            return Verdict(letter, claimed)
    return Verdict(
        letter,
        claimed,
        f"handler {handler.name!r} does not subscribe to channel {claimed.name!r} nor to a pattern matching it",
    )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one entry. ``detail`` says why for every action but ``replayed``."""

    id: str
    action: Action
    handler: str = ""
    target: Target | None = None
    detail: str = ""


@dataclass(slots=True)
class ReplayReport:
    """Every entry's outcome, in the order they were met."""

    stream: str
    dry_run: bool = False
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, action: Action) -> int:
        return sum(1 for o in self.outcomes if o.action == action)

    @property
    def complete(self) -> bool:
        """True when every entry was replayed (or would be): nothing refused, failed or left."""
        return all(o.action in ("replayed", "would replay", "skipped") for o in self.outcomes)


async def replay_dead_letters(
    store: DeadLetterStore,
    router: Router,
    *,
    ids: Sequence[str] | None = None,
    keep: bool = False,
    dry_run: bool = False,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> ReplayReport:
    """Replay the entries ``ids`` of ``store`` (None: every entry there when it starts).

    Entries are read one at a time for ``ids`` (``XRANGE id id``), a page at a time otherwise,
    never the whole stream. Entries written while it runs (a replayed message that fails again)
    are left for the next replay. ``on_outcome`` is called as each entry is settled. Raises
    ConfigError, before replaying anything, if one of ``ids`` is not in the stream.
    """
    report = ReplayReport(store.stream, dry_run)

    def settle(outcome: Outcome) -> None:
        report.outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)

    if ids is not None:
        letters = [(entry_id, await store.get(entry_id)) for entry_id in dict.fromkeys(ids)]
        missing = [entry_id for entry_id, letter in letters if letter is None]
        if missing:
            raise ConfigError(f"no dead letter with id(s): {', '.join(missing)} in {store.stream!r}")
        for index, (_, letter) in enumerate(letters):
            assert letter is not None
            outcome, lost = await _replay_one(store, router, letter, keep=keep, dry_run=dry_run)
            settle(outcome)
            if lost:
                for entry_id, _ in letters[index + 1 :]:
                    settle(Outcome(entry_id, "not attempted", detail="the connection to Redis was lost before it"))
                break
        return report
    last = await store.redis.xrevrange(store.stream, "+", "-", count=1)
    if not last:
        return report
    end = _text(last[0][0])
    async for page in store.pages(PAGE, end=end):
        for letter in page:
            outcome, lost = await _replay_one(store, router, letter, keep=keep, dry_run=dry_run)
            settle(outcome)
            if lost:
                detail = f"the entries after {letter.id} up to {end}: the connection to Redis was lost"
                settle(Outcome("", "not attempted", detail=detail))
                return report
    return report


async def _replay_one(
    store: DeadLetterStore, router: Router, letter: DeadLetter, *, keep: bool, dry_run: bool
) -> tuple[Outcome, bool]:
    """The outcome for ``letter``, and whether the connection to Redis was lost on the way."""
    verdict = replay_verdict(router, letter)
    target = verdict.target
    handler = letter.handler
    if verdict.refusal is not None or target is None:
        return Outcome(letter.id, "refused", handler, target, verdict.refusal or "no target"), False
    if dry_run:
        return Outcome(letter.id, "would replay", handler, target), False
    if not keep:
        try:
            if not await store.claim(letter.id):
                return Outcome(letter.id, "skipped", handler, target, "already replayed or deleted by another"), False
        except Exception as exc:  # noqa: BLE001 - reported with the entry, which is still in the stream
            detail = f"could not take it off the stream: {_say(exc)}"
            return Outcome(letter.id, "failed", handler, target, detail), isinstance(exc, _LOST)
    try:
        await _send(store, target, letter.payload)
    except Exception as exc:  # noqa: BLE001 - every failure is reported with the entry it concerns
        lost = isinstance(exc, _LOST)
        if keep:
            return Outcome(letter.id, "failed", handler, target, f"{_say(exc)}; it is still in the stream"), lost
        try:
            new_id = await store.put_back(letter)
        except Exception as again:  # noqa: BLE001
            detail = f"{_say(exc)}; writing it back failed too ({_say(again)}): the entry is LOST"
            return Outcome(letter.id, "failed", handler, target, detail), True
        detail = f"{_say(exc)}; written back to the stream as {new_id}"
        return Outcome(letter.id, "failed", handler, target, detail), lost
    return Outcome(letter.id, "replayed", handler, target), False


async def _send(store: DeadLetterStore, target: Target, payload: bytes) -> None:
    # Names as bytes: channel and stream names need not be UTF-8 (eventbus._payloads).
    redis = store.redis
    name = encode_name(target.name)
    if target.declared is not None:
        await RedisHistory(redis).publish(target.declared, payload)
    elif target.kind == "stream":
        # The handler sees the same .data it failed on; its group delivers the new entry.
        await redis.xadd(name, {"data": payload})
    elif target.kind == "sharded":
        await redis.spublish(name, payload)
    else:
        await redis.publish(name, payload)


def _say(exc: BaseException) -> str:
    first = str(exc).split("\n", 1)[0]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
