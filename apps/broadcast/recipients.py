"""Reading a bulk send from a file: one message per CSV row or JSON entry.

CSV needs a header row with a ``to`` column and, unless defaults are given on the command line,
``from`` and ``message`` columns (other columns, such as a name, are ignored). JSON is an array
whose entries are objects with the same keys, or bare ``"+5584..."`` strings that use the
defaults; ``.jsonl`` holds one such entry per line. Every entry is validated before anything is
published, so a bad row 9,000 cannot leave a half-sent campaign behind.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from apps.broadcast.payload import InvalidPayload, Sms, validate_sms

FORMATS = ("csv", "json", "jsonl")
_MAX_REPORTED = 10


class RecipientsError(ValueError):
    """The file cannot be used; the message lists the first problems with their line/entry."""


@dataclass(frozen=True)
class Defaults:
    from_: str | None = None
    message: str | None = None


def detect_format(path: Path) -> str:
    suffix = path.suffix.lower().lstrip(".")
    if suffix == "ndjson":
        return "jsonl"
    if suffix in FORMATS:
        return suffix
    raise RecipientsError(f"{path}: cannot tell the format from the extension; pass --format csv|json|jsonl")


def load_recipients(path: Path, defaults: Defaults, fmt: str | None = None) -> list[Sms]:
    fmt = fmt or detect_format(path)
    try:
        if fmt == "csv":
            entries = _read_csv(path)
        elif fmt == "json":
            entries = _read_json(path)
        elif fmt == "jsonl":
            entries = _read_jsonl(path)
        else:
            raise RecipientsError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    except OSError as exc:
        raise RecipientsError(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise RecipientsError(f"{path}: not UTF-8 text") from None

    messages: list[Sms] = []
    problems: list[str] = []
    for where, entry in entries:
        try:
            messages.append(_to_sms(entry, defaults))
        except InvalidPayload as exc:
            problems.append(f"{path}:{where}: {exc}")
    if problems:
        shown = problems[:_MAX_REPORTED]
        more = len(problems) - len(shown)
        tail = f"\n... and {more} more" if more else ""
        raise RecipientsError(f"{len(problems)} invalid entries, nothing was published:\n" + "\n".join(shown) + tail)
    if not messages:
        raise RecipientsError(f"{path}: no recipients")
    return messages


def _to_sms(entry: Any, defaults: Defaults) -> Sms:
    if isinstance(entry, str):
        entry = {"to": entry}
    if not isinstance(entry, dict):
        raise InvalidPayload(f"expected an object or a phone number string, got {type(entry).__name__}")
    # An empty cell means "use the default", as a missing column does.
    body = entry.get("message") or defaults.message
    from_ = entry.get("from") or defaults.from_
    if body is None:
        raise InvalidPayload("no 'message' (add the column/key or pass --message)")
    if from_ is None:
        raise InvalidPayload("no 'from' (add the column/key or pass --from)")
    to = entry.get("to")
    if to is None:
        raise InvalidPayload("no 'to'")
    return validate_sms(body, _strip(from_), _strip(to))


def _strip(value: Any) -> Any:
    # Spreadsheets and hand-written files often carry stray spaces around numbers.
    return value.strip() if isinstance(value, str) else value


def _read_csv(path: Path) -> list[tuple[str, Any]]:
    with path.open(newline="", encoding="utf-8-sig") as fh:  # -sig: spreadsheets write a BOM
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "to" not in [f.strip() for f in reader.fieldnames]:
            raise RecipientsError(f"{path}: the first row must be a header with a 'to' column")
        return [
            (f"line {reader.line_num}", {(k or "").strip(): v for k, v in row.items()})
            for row in reader
            if any((v or "").strip() for v in row.values() if isinstance(v, str))
        ]


def _read_json(path: Path) -> list[tuple[str, Any]]:
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise RecipientsError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise RecipientsError(f"{path}: expected a JSON array of recipients")
    return [(f"entry {i}", entry) for i, entry in enumerate(data, start=1)]


def _read_jsonl(path: Path) -> list[tuple[str, Any]]:
    entries: list[tuple[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {number}", orjson.loads(line)))
            except orjson.JSONDecodeError:
                raise RecipientsError(f"{path}:line {number}: not valid JSON") from None
    return entries
