"""``python -m eventbus dead-letters list|replay``: the dead-letter stream for people.

Every value printed comes from an entry anyone who may write the stream could have forged, so
each one is escaped (no control character, ANSI sequence or line break reaches the terminal) and
cut short; ``list`` reads no payload (:meth:`DeadLetterStore.summaries`), and ``replay`` goes
through the trust boundary of :mod:`eventbus._replay`.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from eventbus._backends import resolve_url, wait_until_reachable
from eventbus._deadletter import DeadLetter, DeadLetterStore
from eventbus._errors import ConfigError
from eventbus._replay import Outcome, claimed_target, replay_dead_letters
from eventbus._router import ensure_cwd_on_path, load_target
from eventbus._runner import connect
from eventbus._settings import DEFAULT_DEAD_LETTER_MAX_BYTES

NAME_LIMIT = 120  # characters of a handler, channel or stream name shown
ERROR_LIMIT = 300  # characters of an error shown by list
_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def shown(text: str, limit: int = NAME_LIMIT) -> str:
    """``text`` safe for a terminal line: non-printable characters escaped, cut to ``limit``.

    Undecodable bytes (kept as surrogates by ``surrogateescape``) show as ``\\xNN``, control
    characters (ESC of ANSI sequences included) and other non-printable ones (line and paragraph
    separators, bidirectional overrides) as their escape.
    """
    out: list[str] = []
    for char in text[:limit]:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif char.isprintable():
            out.append(char)
        elif code < 0x100:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    if len(text) > limit:
        out.append(f"...(+{len(text) - limit} chars)")
    return "".join(out)


def quoted(text: str, limit: int = NAME_LIMIT) -> str:
    return f"'{shown(text, limit)}'"


def _raw_text(letter: DeadLetter, name: str) -> str:
    return letter.fields.get(name.encode(), b"").decode("utf-8", "surrogateescape")


def _when(letter: DeadLetter) -> str:
    if any(p.startswith("ts ") for p in letter.problems) or b"ts" not in letter.fields:
        return f"ts={quoted(_raw_text(letter, 'ts'), 40)}"
    try:
        return datetime.fromtimestamp(letter.ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"ts={quoted(_raw_text(letter, 'ts'), 40)}"


def format_letter(letter: DeadLetter) -> str:
    """One line for ``list``: id, handler, where replay would send it, attempts, size, time, origin, error."""
    target, inconsistency = claimed_target(letter)
    where = "no target" if target is None else f"{target.kind} {quoted(target.name)}"
    if letter.pattern and target is not None and target.kind == "channel":
        where += f" via {quoted(letter.pattern)}"
    attempts = str(letter.attempts)
    if any(p.startswith("attempts ") for p in letter.problems) or b"attempts" not in letter.fields:
        attempts = quoted(_raw_text(letter, "attempts"), 40)
    parts = [
        shown(letter.id, 40),
        shown(letter.handler) or "''",
        where,
        f"attempts={attempts}",
        f"{letter.size} bytes",
        _when(letter),
        shown(letter.origin),
        shown(letter.error, ERROR_LIMIT),
    ]
    line = "  ".join(parts)
    if inconsistency is not None:
        line += f"  [refused by replay: {shown(inconsistency, ERROR_LIMIT)}]"
    if letter.problems:
        line += f"  [malformed: {shown('; '.join(letter.problems), ERROR_LIMIT)}]"
    return line


def format_outcome(outcome: Outcome) -> str:
    where = "" if outcome.target is None else f" -> {outcome.target.kind} {quoted(outcome.target.name)}"
    handler = f" {shown(outcome.handler)}" if outcome.handler else ""
    detail = f": {shown(outcome.detail, ERROR_LIMIT)}" if outcome.detail else ""
    return f"{outcome.action:<13} {shown(outcome.id, 40)}{handler}{where}{detail}".rstrip()


async def dead_letters(args: argparse.Namespace) -> int:
    """The ``dead-letters`` command: 0 when done; 1 when replay refused or failed some entry."""
    router = None
    if args.action == "replay":
        if not args.module:
            raise ConfigError(
                "dead-letters replay needs --module MODULE, the handler code that decides where each entry may go "
                "back (an entry's own fields are not trusted)"
            )
        if args.all == bool(args.id):
            raise ConfigError("dead-letters replay needs --id ID (repeatable) or --all, not both")
        ensure_cwd_on_path()
        router = load_target(args.module)  # a typo fails before any wait
    await wait_until_reachable(resolve_url(args.url).url, args.connect_timeout)
    async with connect(args.url) as bus:
        store = DeadLetterStore(bus.redis, args.dead_letter_stream, max_bytes=DEFAULT_DEAD_LETTER_MAX_BYTES)
        if router is None:
            letters = await store.summaries(count=args.count)
            for letter in letters:
                print(format_letter(letter))
            print(f"{len(letters)} dead letter(s) shown from {quoted(store.stream)}")
            return 0
        report = await replay_dead_letters(
            store,
            router,
            ids=None if args.all else args.id,
            keep=args.keep,
            dry_run=args.dry_run,
            on_outcome=lambda outcome: print(format_outcome(outcome), flush=True),
        )
    counts = ", ".join(
        f"{report.count(action)} {action}"
        for action in ("replayed", "would replay", "refused", "failed", "skipped", "not attempted")
        if report.count(action) or action == ("would replay" if args.dry_run else "replayed")
    )
    suffix = " (dry run: nothing was changed)" if args.dry_run else ""
    entries = sum(1 for o in report.outcomes if o.id)
    print(f"{counts} of {entries} dead letter(s) in {quoted(store.stream)}{suffix}")
    return 0 if report.complete else 1
