"""The dashboard's HTML: one server-rendered page, whose sections a small script refreshes.

Every value comes from Redis, which anyone who may write to it could have forged, so every value
is escaped (:func:`html.escape`) and none is put in a script or a URL unescaped. The page loads
only its own script and style sheet (the Content-Security-Policy of eventbus._dashboard forbids
anything else): no front-end build, nothing vendored.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from eventbus._dashboard_state import CHANNEL_FIGURES, CHANNEL_TROUBLE, ERROR_SHOWN, Channels, Filter, Shown
from eventbus._lag import GroupLag
from eventbus._urls import redact_url

# A URL inside free text (a handler's error quoting the connection it failed on): its password goes.
_URL_IN_TEXT = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>]+", re.IGNORECASE)


def without_credentials(text: str) -> str:
    """``text`` with every URL in it redacted as the logs redact them (``redis://user:***@host``)."""
    return _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)


def _e(value: Any) -> str:
    return escape(str(value), quote=True)


def _when(ts: Any) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "?"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "?"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _latency(value: Any) -> str:
    if value == "inf":
        return "> 30 s"
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    return f"≤ {value * 1000:g} ms"


def _bytes(value: Any) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(value)  # pragma: no cover


def _table(headers: Sequence[str], rows: Sequence[str], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _cells(*values: str) -> str:
    return "<tr>" + "".join(f"<td>{v}</td>" for v in values) + "</tr>"


def processes_html(processes: Sequence[dict[str, Any]]) -> str:
    now = time.time()
    rows = []
    for p in processes:
        if p.get("alive"):
            state = f'<span class="ok">running</span>, up {_e(_duration(now - _num(p.get("started"))))}'
        elif "stopped" in p:
            state = f'<span class="gone">stopped</span> at {_e(_when(p.get("stopped")))}'
        else:
            state = f'<span class="gone">gone</span>, last beat {_e(_when(p.get("ts")))}'
        rows.append(
            _cells(
                _e(p.get("host", "?")),
                _e(p.get("pid", "?")),
                _e(p.get("worker") or "-"),
                _e(p.get("app", "?")),
                state,
                _e(p.get("version", "?")),
                _e(p.get("hot_path", "?")),
                _e(p.get("loop", "?")),
                "reading paused" if p.get("paused") else ("connected" if p.get("connected") else "reconnecting"),
            )
        )
    headers = ("host", "pid", "worker", "app", "state", "version", "hot path", "event loop", "subscription")
    return _table(headers, rows, "No process has sent a heartbeat to this Redis yet.")


def _where(process: dict[str, Any]) -> str:
    """``host:pid [worker i/N]``, unescaped."""
    worker = process.get("worker")
    return f"{process.get('host', '?')}:{process.get('pid', '?')}" + (f" [{worker}]" if worker else "")


def _recovery(handler: dict[str, Any]) -> str:
    if not handler.get("recovers"):
        return "no"
    return "recovers and resumes" if handler.get("resumes") else "recovers"


def handlers_html(processes: Sequence[dict[str, Any]]) -> str:
    rows = []
    for p in processes:
        if not p.get("alive"):
            continue
        where = _where(p)
        handlers = p.get("handlers")
        for h in handlers if isinstance(handlers, list) else []:
            if not isinstance(h, dict):
                continue
            subscriptions = [
                *(f"channel {c}" for c in _strs(h.get("channels"))),
                *(f"pattern {c}" for c in _strs(h.get("patterns"))),
                *(f"stream {s.get('stream')} (group {s.get('group')})" for s in _dicts(h.get("streams"))),
            ]
            rows.append(
                _cells(
                    _e(h.get("name", "?")),
                    _e(where),
                    "<br>".join(_e(s) for s in subscriptions) or "-",
                    _e(f"{_num(h.get('rate')):g}"),
                    f'<span class="count" data-handled="{_e(h.get("name", ""))}">{_e(h.get("handled", 0))}</span>',
                    _e(h.get("failed", 0)),
                    _e(h.get("rejected", 0)),
                    _e(h.get("dropped", 0)),
                    _e(h.get("dead_lettered", 0)),
                    f"{_e(_bytes(h.get('inbox_bytes')))} of {_e(_bytes(h.get('inbox_budget')))}",
                    _e(_latency(h.get("p50"))),
                    _e(_latency(h.get("p99"))),
                    "paused" if h.get("paused") else "no",
                    _recovery(h),
                )
            )
    headers = (
        *("handler", "process", "subscribed to", "messages/s", "handled", "failed", "rejected", "dropped"),
        *("dead-lettered", "inbox", "p50", "p99", "paused", "recoverable channels"),
    )
    return _table(headers, rows, "No running process has handlers.")


# Each recovery counter in words (eventbus._stats.RecoveryStats), as the table's headers and the breakdown say it.
CHANNEL_LABELS = {
    "recovered": "recovered",
    "unrecovered": "not recovered",
    "history_lost": "history lost",
    "foreign": "published without history",
    "resumed": "resumed",
    "unclean_resumes": "unclean resumes",
    "recoveries": "recoveries",
    "recovery_seconds": "total recovery time",
}
# What a counter above 0 means for the messages, said in the channel's status.
CHANNEL_TROUBLE_WORDS = {
    "unrecovered": "messages lost",
    "history_lost": "history lost",
    "unclean_resumes": "messages handled again",
}


def _figure(key: str, value: float) -> str:
    return f"{value:.3f} s" if key == "recovery_seconds" else f"{value:.0f}"


def _figures_text(figures: dict[str, float]) -> str:
    said = [f"{CHANNEL_LABELS[key]} {_figure(key, value)}" for key, value in figures.items() if value]
    return ", ".join(said) or "nothing to report"


def channels_html(channels: Channels) -> str:
    rows = []
    for channel in channels.shown:
        trouble = [CHANNEL_TROUBLE_WORDS[key] for key in CHANNEL_TROUBLE if channel.total[key]]
        status = f'<strong class="bad">WARNING: {_e(", ".join(trouble))}</strong>' if trouble else "no loss"
        cells = []
        for key in CHANNEL_FIGURES:
            text = _e(_figure(key, channel.total[key]))
            cells.append(
                f'<strong class="bad">{text}</strong>' if key in CHANNEL_TROUBLE and channel.total[key] else text
            )
        count = len(channel.by_process)
        breakdown = "".join(
            f"<li>{_e(_where(process))}: {_e(_figures_text(figures))}</li>" for process, figures in channel.by_process
        )
        processes = (
            f'<details data-key="{_e(channel.name)}"><summary>{count} process{"" if count == 1 else "es"}</summary>'
            f"<ul>{breakdown}</ul></details>"
        )
        rows.append(_cells(_e(channel.name), status, *cells, processes))
    headers = ("channel", "status", *(CHANNEL_LABELS[key] for key in CHANNEL_FIGURES), "processes")
    notes = [
        f"{_where(p)} has {p.get('channels_total')} recoverable channels: its heartbeat carries the first "
        f"{len(p.get('channels') or {})} by name, and this table only those."
        for p in channels.capped
    ]
    if channels.count > len(channels.shown):
        notes.append(
            f"{len(channels.shown)} channels shown of {channels.count}: those with a warning first, then by name."
        )
    note = "".join(f'<p class="capped">{_e(n)}</p>' for n in notes)
    sums = '<p class="total">Summed over the running processes, each counting since it started.</p>' if rows else ""
    return sums + note + _table(headers, rows, "No running process subscribes to a recoverable channel.")


def groups_html(groups: Sequence[GroupLag]) -> str:
    rows = []
    for g in groups:
        if not g.exists:
            rows.append(_cells(_e(g.stream), _e(g.group), "not created yet", "-", "-", "-", "-"))
            continue
        lag = "?" if g.lag is None else f"{g.lag}{'' if g.lag_exact else '+'}"
        oldest = "-" if g.oldest_pending_idle is None else f"{g.oldest_pending_idle:.1f} s"
        rows.append(
            _cells(_e(g.stream), _e(g.group), _e(lag), _e(g.pending), _e(oldest), _e(g.exhausted), _e(g.consumers))
        )
    headers = ("stream", "group", "lag", "pending", "oldest pending", "at max deliveries", "consumers")
    return _table(headers, rows, "No running process consumes a stream.")


def letters_html(letters: Sequence[Shown], total: int, stream: str) -> str:
    rows = []
    for shown in letters:
        letter = shown.letter
        where = f"stream {letter.stream}" if letter.stream else f"channel {letter.channel}"
        if letter.pattern:
            where += f" (via pattern {letter.pattern})"
        error = without_credentials(letter.error)
        error = error if len(error) <= ERROR_SHOWN else error[:ERROR_SHOWN] + "..."
        button = f'<button type="submit" name="id" value="{_e(letter.id)}" formaction="dead-letters/'
        if shown.replay is None:
            replay = f'{button}replay">Replay</button>'
        else:
            replay = f'<span class="refused" title="{_e(shown.replay)}">not replayable: {_e(shown.replay)}</span>'
        delete = f'{button}delete">Delete</button>'
        rows.append(
            f'<tr data-id="{_e(letter.id)}">'
            f'<td><input type="checkbox" name="selected" value="{_e(letter.id)}" aria-label="select {_e(letter.id)}">'
            f"</td><td>{_e(letter.id)}<br>{_e(_when(letter.ts))}</td><td>{_e(letter.handler)}</td><td>{_e(where)}</td>"
            f"<td>{_e(letter.attempts)}</td><td>{_e(letter.origin)}</td>"
            f'<td><pre class="error">{_e(error)}</pre></td><td><pre class="payload">{_e(shown.payload)}</pre></td>'
            f"<td>{replay} {delete}</td></tr>"
        )
    headers = ("", "id, written", "handler", "from", "attempts", "process", "error", "payload", "")
    note = f'<p class="total">{len(letters)} shown of {total} in {_e(stream)}.</p>'
    return note + _table(headers, rows, "No dead letter matches." if total else "No dead letters.")


def page(
    *,
    server: str,
    sections: dict[str, str],
    wanted: Filter,
    csrf: str,
    notice: str,
    can_replay: bool,
) -> str:
    query = urlencode({"handler": wanted.handler, "channel": wanted.channel, "error": wanted.error})
    scope = "matching the filter" if not wanted.empty else "in the stream"
    replay_note = (
        ""
        if can_replay
        else '<p class="empty">Replay is off: start the dashboard with --module MODULE (the handler code that '
        "decides where an entry may go back).</p>"
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>eventbus dashboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="dashboard.css"></head>
<body data-live="live?{_e(query)}">
<header><h1>eventbus</h1><p>Redis: <code>{_e(server)}</code> · updated <span id="updated">now</span></p></header>
{f'<p class="notice" role="status">{_e(notice)}</p>' if notice else ""}
<section><h2>Processes</h2><div id="processes">{sections["processes"]}</div></section>
<section><h2>Handlers</h2><div id="handlers">{sections["handlers"]}</div></section>
<section><h2>Recoverable channels</h2><div id="channels">{sections["channels"]}</div></section>
<section><h2>Stream groups</h2><div id="groups">{sections["groups"]}</div></section>
<section><h2>Dead letters</h2>
<form method="get" action="." class="filter">
<label>handler <input name="handler" value="{_e(wanted.handler)}"></label>
<label>channel <input name="channel" value="{_e(wanted.channel)}"></label>
<label>error <input name="error" value="{_e(wanted.error)}"></label>
<button type="submit">Filter</button> <a href=".">Clear the filter</a></form>
{replay_note}
<form method="post" action="dead-letters/" id="letters-form">
<input type="hidden" name="csrf" value="{_e(csrf)}">
<input type="hidden" name="handler" value="{_e(wanted.handler)}">
<input type="hidden" name="channel" value="{_e(wanted.channel)}">
<input type="hidden" name="error" value="{_e(wanted.error)}">
<p class="bulk">
<button type="submit" name="scope" value="selected" formaction="dead-letters/replay">Replay selected</button>
<button type="submit" name="scope" value="selected" formaction="dead-letters/delete">Delete selected</button>
<button type="submit" name="scope" value="matching" formaction="dead-letters/replay">Replay all {scope}</button>
<button type="submit" name="scope" value="matching" formaction="dead-letters/delete">Delete all {scope}</button>
</p>
<div id="letters">{sections["letters"]}</div></form></section>
<script src="dashboard.js"></script>
</body></html>
"""


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _strs(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


SCRIPT = """\
"use strict";
// Refreshes each section from /live every few seconds, keeping the dead letters that are ticked and
// the per-process breakdowns that are open.
(function () {
  const url = document.body.dataset.live;
  async function refresh() {
    try {
      const reply = await fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}});
      if (!reply.ok) { document.getElementById("updated").textContent = "failed (" + reply.status + ")"; return; }
      const sections = await reply.json();
      const ticked = new Set(Array.from(document.querySelectorAll("input[name=selected]:checked"), e => e.value));
      const open = new Set(Array.from(document.querySelectorAll("details[data-key][open]"), e => e.dataset.key));
      for (const [id, html] of Object.entries(sections)) {
        const element = document.getElementById(id);
        if (element && element.innerHTML !== html) { element.innerHTML = html; }
      }
      for (const box of document.querySelectorAll("input[name=selected]")) { box.checked = ticked.has(box.value); }
      for (const part of document.querySelectorAll("details[data-key]")) { part.open = open.has(part.dataset.key); }
      document.getElementById("updated").textContent = new Date().toLocaleTimeString();
    } catch (error) {
      document.getElementById("updated").textContent = "failed (" + error + ")";
    }
  }
  setInterval(refresh, 2000);
})();
"""

STYLE = """\
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em 2em; color: #222; }
h1 { margin: 0; } header p { margin: 0.2em 0 1em; color: #555; }
table { border-collapse: collapse; width: 100%; margin-bottom: 0.5em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
pre { margin: 0; white-space: pre-wrap; word-break: break-all; max-height: 12em; overflow: auto; }
.ok { color: #17692b; font-weight: bold; } .gone, .bad { color: #a01818; font-weight: bold; }
.capped { background: #fff6e0; padding: 0.5em; } details ul { margin: 0.2em 0; padding-left: 1.2em; }
.refused { color: #7a5a00; } .empty { color: #666; } .notice { background: #eef6ff; padding: 0.5em; }
form.filter label { margin-right: 1em; } button { margin: 0.1em; }
"""
