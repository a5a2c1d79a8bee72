"""The dead-letter store: messages that a handler could not or would not process.

A Redis stream (``eventbus:dead-letter`` by default; an app may use its own), so dead letters
survive a restart of the consumer, can be inspected with any Redis client (``XRANGE``) and replayed
with ``python -m eventbus dead-letters replay --module MODULE``. It is bounded by entries and by
bytes (:mod:`eventbus._deadletter_budget`). Each entry names the process that wrote it (``host``,
``pid``, ``worker``).

Anything that may XADD to the stream can write an entry, so entries are read as untrusted input:
reading never fails on a malformed entry (:attr:`DeadLetter.problems` names what is wrong), and
where an entry may be replayed is decided against the handler code by :mod:`eventbus._replay`,
never by its fields alone.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from eventbus._deadletter_budget import ByteBudget, describe_bytes, describe_error, entry_size, refusal
from eventbus._errors import ConfigError
from eventbus._logs import LineLimit, worker_tag
from eventbus._message import Message
from eventbus._names import encode_name
from eventbus._settings import (
    DEFAULT_DEAD_LETTER_MAX_BYTES,
    DEFAULT_DEAD_LETTER_STREAM,
    ENV_DEAD_LETTER_MAX_BYTES,
    parse_size,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from eventbus._stats import BusStats

DEFAULT_MAXLEN = 100_000
ERROR_LIMIT = 4000  # characters of a handler's error kept in its dead letter
# What list() shows of an entry: every value cut to this many bytes, at most this many fields.
SHOWN_BYTES = 1024
SHOWN_FIELDS = 64
REQUIRED = ("handler", "channel", "payload", "error", "attempts", "ts")
log = logging.getLogger("eventbus.deadletter")

# list() without payloads: XRANGE on the server, returning each entry's fields with the payload's
# value left out (unless ARGV[6] is 1: then cut like the others) and every value cut to ARGV[4]
# bytes, plus each value's full length, so listing 10,000 entries of 1 MiB transfers kilobytes.
# Read-only (EVAL_RO), so a read-only user may run it.
_SUMMARIES = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
local limit, max_fields = tonumber(ARGV[4]), tonumber(ARGV[5])
local out = {}
for i, entry in ipairs(entries) do
  local raw, fields, sizes = entry[2], {}, {}
  for j = 1, math.min(#raw, max_fields * 2), 2 do
    local name, value = raw[j], raw[j + 1]
    fields[#fields + 1] = string.sub(name, 1, limit)
    if name == 'payload' and ARGV[6] ~= '1' then value = '' end
    fields[#fields + 1] = string.sub(value, 1, limit)
    sizes[#sizes + 1] = #raw[j + 1]
  end
  out[i] = {entry[1], fields, sizes, #raw / 2}
end
return out
"""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of the dead-letter stream, as read (see the module docstring: untrusted).

    ``stream`` is set for a stream entry (replay appends it there again). ``host``, ``pid`` and
    ``worker`` (``"2/4"`` under ``run --workers 4``) name the process that wrote it, when it did.
    ``size`` is the payload's length, also when the payload itself was not read
    (:meth:`DeadLetterStore.summaries`). ``problems`` names each required field that is missing
    or malformed (``attempts 'abc' is not a number``): such an entry was not written by eventbus,
    its values are shown as read and replay refuses it. ``fields`` has the entry's raw fields.
    """

    id: str
    handler: str
    channel: str
    pattern: str | None
    payload: bytes
    error: str
    attempts: int
    ts: float
    stream: str | None = None
    host: str | None = None
    pid: int | None = None
    worker: str | None = None
    size: int = 0
    problems: tuple[str, ...] = ()
    fields: Mapping[bytes, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def origin(self) -> str:
        """The process that wrote it: ``host:pid``, ``[worker 2/4]`` added; ``?`` if unknown."""
        where = f"{self.host or '?'}:{self.pid if self.pid is not None else '?'}"
        return f"{where} [worker {self.worker}]" if self.worker else where


_Letters = list[DeadLetter]  # (the store's list() method hides the builtin's name in its class)


def process_identity() -> dict[str, str]:
    """The fields that name this process in its dead letters."""
    identity = {"host": socket.gethostname(), "pid": str(os.getpid())}
    tag = worker_tag()  # "worker 2/4" in a worker of `run --workers 4`
    if tag is not None:
        identity["worker"] = tag.removeprefix("worker ")
    return identity


def resolve_max_bytes(max_bytes: int | None) -> int:
    """The byte budget of the dead-letter stream: ``max_bytes``, else $EVENTBUS_DEAD_LETTER_MAX_BYTES,
    else :data:`~eventbus._settings.DEFAULT_DEAD_LETTER_MAX_BYTES`."""
    if max_bytes is None:
        text = os.environ.get(ENV_DEAD_LETTER_MAX_BYTES, "").strip()
        if not text:
            return DEFAULT_DEAD_LETTER_MAX_BYTES
        try:
            max_bytes = parse_size(text)
        except ValueError as exc:
            raise ConfigError(f"${ENV_DEAD_LETTER_MAX_BYTES}: {exc}") from None
    if max_bytes < 1:
        raise ConfigError(f"the dead-letter byte budget must be at least 1 byte, got {max_bytes}")
    return max_bytes


class DeadLetterStore:
    """Appends to and reads from the dead-letter stream through a redis.asyncio client.

    ``max_bytes`` (default: $EVENTBUS_DEAD_LETTER_MAX_BYTES, else 32 MiB) and ``maxlen`` bound the
    stream; ``stats`` counts the entries trimmed to keep it so. ``origin`` names the writing
    process in each entry (default: this process, :func:`process_identity`).
    """

    def __init__(
        self,
        redis: Redis,
        stream: str = DEFAULT_DEAD_LETTER_STREAM,
        maxlen: int = DEFAULT_MAXLEN,
        *,
        max_bytes: int | None = None,
        stats: BusStats | None = None,
        origin: Mapping[str, str] | None = None,
    ) -> None:
        self.redis: Redis = redis
        self._stream = stream
        self.maxlen = maxlen
        self.stats = stats
        self.origin = dict(origin) if origin is not None else process_identity()
        self.budget = ByteBudget(resolve_max_bytes(max_bytes), maxlen, self._count_trim)
        # A lost dead letter is logged within the rate limit of each handler's lines (eventbus._logs).
        self._lines: dict[str, LineLimit] = {}

    @property
    def stream(self) -> str:
        return self._stream

    @stream.setter
    def stream(self, name: str) -> None:
        """Write to another stream from now on (a startup hook may choose the app's own)."""
        if not isinstance(name, str) or not name:
            raise ConfigError(f"the dead-letter stream must be a non-empty string, got {name!r}")
        self._stream = name
        self.budget.reset()

    def _count_trim(self, entries: int) -> None:
        if self.stats is not None:
            self.stats.dead_letters_trimmed += entries

    # -- writing -------------------------------------------------------------------------------

    async def add(
        self, handler: str, msg: Message, error: str, attempts: int, extra: dict[str, Any] | None = None
    ) -> bool:
        """Keep ``msg``; returns False (and logs) if Redis itself refused, so the caller goes on
        and counts the loss.

        ``extra`` adds fields (a stream entry's ``stream``, ``group`` and ``entry_id``).
        """
        # Any: redis-py's xadd wants its own invariant key/value union, which a str-keyed dict is not.
        fields: dict[Any, Any] = {
            "handler": handler,
            # Channel names are binary-safe: the dispatcher decoded them with surrogateescape, so
            # encoding them back the same way keeps any byte string (and replays to the same channel).
            "channel": encode_name(msg.channel),
            "pattern": encode_name(msg.pattern or ""),
            "payload": msg.data,
            "error": error[:ERROR_LIMIT].encode("utf-8", "backslashreplace"),
            "attempts": attempts,
            "ts": f"{time.time():.6f}",
            **self.origin,
            **(extra or {}),
        }
        budget = self.budget
        try:
            await self.redis.xadd(self.stream, fields, maxlen=budget.xadd_maxlen(), approximate=True)
        except Exception as exc:  # noqa: BLE001 - the message is already lost; say so loudly
            lines = self._lines.get(handler) or self._lines.setdefault(handler, LineLimit(log, f"handler {handler}"))
            if lines.allow("dead letter not written", logging.ERROR):
                log.error(
                    "could not dead-letter a message of handler %s on %r to %r (%s): %s",
                    handler,
                    msg.channel,
                    self.stream,
                    type(exc).__name__,
                    exc,
                )
            return False
        try:
            await budget.added(self.redis, self.stream, entry_size(fields))
        except Exception as exc:  # noqa: BLE001 - the dead letter is written; the next check tries again
            log.debug("checking the size of the dead-letter stream %r failed: %s", self.stream, exc)
        return True

    async def probe(self) -> list[str]:
        """What the client may not do with the stream, one line each (empty: all is well).

        Writes nothing. Redis checks a command's ACL before running it, so ``XADD stream NOMKSTREAM
        0-0 ...`` is refused with NOPERM when the user may not write, and otherwise fails on its id
        (``must be greater than 0-0``) without touching the stream. Then the size check runs once
        (measuring and, if the stream is over its limits, trimming it), which tells whether the
        budget can be kept exactly.
        """
        problems: list[str] = []
        try:
            await self.redis.xadd(self.stream, {"probe": ""}, id="0-0", nomkstream=True)
        except ResponseError as exc:
            if "greater than 0-0" not in str(exc):
                problems.append(f"dead letters cannot be written to {self.stream!r}: {describe_error(exc)}")
        else:  # pragma: no cover - Redis never accepts the id 0-0
            problems.append(f"XADD {self.stream!r} 0-0 was accepted: this is not the Redis eventbus expects")
        if problems:
            return problems
        try:
            try:
                # The trim that check() would need, without removing anything.
                await self.redis.xtrim(self.stream, minid="0-0", approximate=False)
            except ResponseError as exc:
                if not refusal(exc):
                    raise
                self.budget.fall_back(self.stream, exc)
            await self.budget.check(self.redis, self.stream)
        except ResponseError as exc:  # a key of another type (WRONGTYPE), most likely
            return [f"the dead-letter stream {self.stream!r} is not usable: {describe_error(exc)}"]
        if self.budget.refused is not None:
            problems.append(
                f"the dead-letter stream {self.stream!r} cannot be measured or trimmed ({self.budget.refused}): its "
                f"{describe_bytes(self.budget.max_bytes)} budget is kept from this process's own writes, uncounted"
            )
        return problems

    def close(self) -> None:
        """Stop the timer of a pending size check (the runner calls it before closing the client),
        and log what the rate limit held back."""
        self.budget.close()
        for lines in self._lines.values():
            lines.flush()

    # -- reading -------------------------------------------------------------------------------

    async def list(self, count: int = 100, start: str = "-") -> _Letters:
        """Up to ``count`` entries from ``start`` (an id, ``-`` for the oldest), payloads included."""
        entries = await self.redis.xrange(self.stream, min=start, max="+", count=count) or []
        return [parse_entry(entry_id, fields or {}) for entry_id, fields in entries]

    async def get(self, entry_id: str) -> DeadLetter | None:
        """The entry ``entry_id`` (read alone: ``XRANGE id id``), or None if there is none."""
        try:
            entries = await self.redis.xrange(self.stream, min=entry_id, max=entry_id, count=1) or []
        except ResponseError as exc:
            if "Invalid stream ID" in str(exc):
                return None
            raise
        return next((parse_entry(i, f or {}) for i, f in entries), None)

    async def pages(self, page: int = 32, start: str = "-", end: str = "+") -> AsyncIterator[_Letters]:
        """Every entry from ``start`` to ``end``, oldest first, ``page`` at a time (memory: one page)."""
        low = start
        while True:
            entries = await self.redis.xrange(self.stream, min=low, max=end, count=page) or []
            batch = [parse_entry(entry_id, fields or {}) for entry_id, fields in entries]
            if not batch:
                return
            yield batch
            if len(batch) < page:
                return
            low = f"({batch[-1].id}"

    async def summaries(self, count: int = 100, start: str = "-", *, payloads: bool = False) -> _Letters:
        """As :meth:`list` without the payloads (``payload`` is empty, ``size`` its length) and with
        every value cut to :data:`SHOWN_BYTES`: the payloads stay on the server. ``payloads=True``
        keeps the first :data:`SHOWN_BYTES` of each payload (what a dashboard shows).

        Through a read-only script (EVAL_RO); where that is refused or unknown (Redis before 7,
        fakeredis, an ACL without it), entries are read whole, a few at a time, and their
        payloads dropped after measuring.
        """
        try:
            reply = await self.redis.eval_ro(
                _SUMMARIES, 1, self.stream, start, "+", count, SHOWN_BYTES, SHOWN_FIELDS, int(payloads)
            )
        except ResponseError as exc:
            if not refusal(exc):
                raise
            log.debug("listing without payloads is not possible here (%s): reading whole entries", exc)
            return await self._summaries_by_reading(count, start, payloads)
        letters = []
        for entry_id, flat, sizes, total in reply or []:
            fields = dict(zip(flat[::2], flat[1::2], strict=True))
            payload_size = next((s for n, s in zip(flat[::2], sizes, strict=True) if n == b"payload"), None)
            letter = parse_entry(entry_id, fields, payload_size=payload_size)
            if int(total) > SHOWN_FIELDS:
                letter = _with_problem(letter, f"{int(total)} fields, only the first {SHOWN_FIELDS} read")
            letters.append(letter)
        return letters

    async def _summaries_by_reading(self, count: int, start: str, payloads: bool) -> _Letters:
        letters: _Letters = []
        async for batch in self.pages(page=min(count, 10), start=start):
            for letter in batch[: count - len(letters)]:
                fields = {k: v[:SHOWN_BYTES] for k, v in letter.fields.items() if payloads or k != b"payload"}
                size = letter.size if b"payload" in letter.fields else None
                letters.append(parse_entry(letter.id, fields, payload_size=size))
            if len(letters) >= count:
                break
        return letters

    async def delete(self, *ids: str) -> int:
        """Remove the entries with these ids; returns how many there were."""
        return int(await self.redis.xdel(self.stream, *ids)) if ids else 0

    async def claim(self, entry_id: str) -> bool:
        """Delete ``entry_id`` if it is still there; True for the one caller that deleted it.

        XDEL is atomic and returns how many entries it removed: of two replays racing for an
        entry, exactly one is told 1 and replays it; the other is told 0 and leaves it.
        """
        return int(await self.redis.xdel(self.stream, entry_id)) == 1

    async def put_back(self, letter: DeadLetter) -> str:
        """Write ``letter``'s fields again (an entry claimed but not replayed); returns the new id."""
        fields: dict[Any, Any] = dict(letter.fields)
        entry_id = await self.redis.xadd(self.stream, fields)
        return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def parse_entry(entry_id: Any, fields: Mapping[Any, Any], *, payload_size: int | None = None) -> DeadLetter:
    """An entry as read from the stream, whatever it holds (never raises).

    ``payload_size``: the payload's length when the payload itself was left out (summaries).
    """
    raw = {_raw(k): _raw(v) for k, v in fields.items()}
    problems: list[str] = []
    for name in REQUIRED:
        if name.encode() not in raw and not (name == "payload" and payload_size is not None):
            problems.append(f"no {name} field")

    def text(name: str, errors: str = "replace") -> str:
        return raw.get(name.encode(), b"").decode("utf-8", errors)

    attempts_text, ts_text, pid_text = text("attempts"), text("ts"), text("pid")
    attempts = _number(attempts_text, int, "attempts", problems) if b"attempts" in raw else 0
    ts = _number(ts_text, float, "ts", problems) if b"ts" in raw else 0.0
    pid = _number(pid_text, int, "pid", problems) if b"pid" in raw else None
    payload = raw.get(b"payload", b"")
    return DeadLetter(
        id=_raw(entry_id).decode("utf-8", "replace"),
        handler=text("handler"),
        channel=text("channel", "surrogateescape"),
        pattern=text("pattern", "surrogateescape") or None,
        payload=payload,
        error=text("error"),
        attempts=int(attempts),
        ts=float(ts),
        stream=text("stream", "surrogateescape") or None,
        host=text("host") or None,
        pid=None if pid is None else int(pid),
        worker=text("worker") or None,
        size=payload_size if payload_size is not None else len(payload),
        problems=tuple(problems),
        fields=raw,
    )


def _number(value: str, kind: type[int] | type[float], name: str, problems: list[str]) -> float:
    try:
        number = kind(value)
    except ValueError:
        number = None
    if number is None or not math.isfinite(number):
        shown = value if len(value) <= 40 else value[:40] + "..."
        problems.append(f"{name} {shown!r} is not a number")
        return 0
    return number


def _with_problem(letter: DeadLetter, problem: str) -> DeadLetter:
    return replace(letter, problems=(*letter.problems, problem))


def _raw(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    return str(value).encode("utf-8", "surrogateescape")
