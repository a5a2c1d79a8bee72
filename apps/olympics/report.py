"""The sales report: read what the listeners wrote and draw it in a terminal (or a PNG).

Everything comes from Redis, so the report is the same whichever process wrote the data.
"""

from __future__ import annotations

import importlib
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.olympics.keys import TOTAL_SALES, TOTAL_TICKETS, TUTORIAL_KEYS, Keys

HOURS = 24
_HISTOGRAM_FORMAT = f">{HOURS}I"  # BITFIELD u32 #h is big-endian bytes 4h..4h+3
_BLOCKS = " ▏▎▍▌▋▊▉█"  # eighths of a character cell, for smooth bars
_SPARKS = " ▁▂▃▄▅▆▇█"


class PngUnavailable(RuntimeError):
    """matplotlib is not installed, so no PNG chart can be written."""


@dataclass(slots=True)
class EventSales:
    name: str
    orders: int = 0
    tickets: int = 0
    sales: float = 0.0
    histogram: list[int] = field(default_factory=lambda: [0] * HOURS)


@dataclass(slots=True)
class SalesReport:
    events: list[EventSales]
    histogram: list[int]  # tickets per UTC hour, all events

    @property
    def orders(self) -> int:
        return sum(e.orders for e in self.events)

    @property
    def tickets(self) -> int:
        return sum(e.tickets for e in self.events)

    @property
    def sales(self) -> float:
        return sum(e.sales for e in self.events)


def decode_histogram(raw: bytes | None) -> list[int]:
    """The 24 counters of a histogram key (GET of a BITFIELD string; missing bytes are zeros)."""
    data = (raw or b"")[: 4 * HOURS].ljust(4 * HOURS, b"\0")
    return list(struct.unpack(_HISTOGRAM_FORMAT, data))


async def load_report(redis: Any, keys: Keys = TUTORIAL_KEYS) -> SalesReport:
    """Read the sales summary, the order sets and the histograms in two round trips."""
    summary = await redis.hgetall(keys.sales_summary)
    names = {_text(name) for name in await redis.smembers(keys.events)}
    totals: dict[str, dict[str, str]] = {}
    for key, value in summary.items():
        event, _, total = _text(key).rpartition(":")
        totals.setdefault(event, {})[total] = _text(value)
    names.update(totals)
    ordered = sorted(names)
    pipe = redis.pipeline(transaction=False)
    pipe.get(keys.histogram)
    for name in ordered:
        pipe.get(keys.event_histogram(name))
        pipe.scard(keys.sales(name))
    replies = await pipe.execute()
    events = []
    for i, name in enumerate(ordered):
        fields = totals.get(name, {})
        events.append(
            EventSales(
                name=name,
                orders=int(replies[2 + 2 * i]),
                tickets=int(fields.get(TOTAL_TICKETS, 0)),
                sales=float(fields.get(TOTAL_SALES, 0)),
                histogram=decode_histogram(replies[1 + 2 * i]),
            )
        )
    return SalesReport(events, decode_histogram(replies[0]))


def render_report(report: SalesReport, *, width: int = 40, unicode: bool = True) -> str:
    """The summary table and the time-of-day chart, as text."""
    if not report.events and not any(report.histogram):
        return "No sales yet: run the simulator (python -m apps.olympics simulate) while the listeners run."
    lines = ["Sales summary", ""]
    name_width = max([len("Event"), len("Total"), *(len(e.name) for e in report.events)])
    header = f"  {'Event':<{name_width}}  {'Orders':>8}  {'Tickets':>9}  {'Sales':>13}"
    lines += [header, "  " + "-" * (len(header) - 2)]
    for e in report.events:
        lines.append(f"  {e.name:<{name_width}}  {e.orders:>8,}  {e.tickets:>9,}  {_money(e.sales):>13}")
    lines.append("  " + "-" * (len(header) - 2))
    lines.append(f"  {'Total':<{name_width}}  {report.orders:>8,}  {report.tickets:>9,}  {_money(report.sales):>13}")
    lines += ["", "Tickets sold by hour of day (UTC), all events", ""]
    peak = max(report.histogram) or 1
    for hour, count in enumerate(report.histogram):
        lines.append(f"  {hour:02d}h {_bar(count, peak, width, unicode):<{width}} {count:,}")
    lines += ["", "By event, hour of day (UTC), each row scaled to its own peak", ""]
    lines.append(f"  {'':<{name_width}}  |0     6     12    18    |")
    for e in report.events:
        lines.append(f"  {e.name:<{name_width}}  |{_sparkline(e.histogram, unicode)}|")
    charted = sum(report.histogram)
    lines.append("")
    if charted == report.tickets:
        lines.append(f"Check: the histogram counts {charted:,} tickets, as the sales summary does.")
    else:
        lines.append(
            f"Warning: the histogram counts {charted:,} tickets but the sales summary {report.tickets:,}: "
            "some orders were not processed by every listener (see the dead letters: "
            "python -m eventbus dead-letters list)."
        )
    return "\n".join(lines)


def write_png(report: SalesReport, path: Path) -> None:
    """A two-panel chart (tickets per hour stacked by event; sales per event); needs matplotlib."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        raise PngUnavailable("writing a PNG needs matplotlib, which is not installed: pip install matplotlib") from None
    matplotlib.use("Agg")  # no display needed
    pyplot = importlib.import_module("matplotlib.pyplot")
    figure, (hours_axis, sales_axis) = pyplot.subplots(1, 2, figsize=(13, 4.5), width_ratios=(3, 1))
    bottom = [0] * HOURS
    for e in report.events:
        hours_axis.bar(range(HOURS), e.histogram, bottom=bottom, label=e.name)
        bottom = [b + v for b, v in zip(bottom, e.histogram, strict=True)]
    hours_axis.set(title="Tickets sold by hour of day (UTC)", xlabel="hour", ylabel="tickets", xticks=range(HOURS))
    hours_axis.legend(fontsize="small")
    sales_axis.barh([e.name for e in report.events], [e.sales for e in report.events])
    sales_axis.set(title="Sales ($)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)


def _bar(count: int, peak: int, width: int, unicode: bool) -> str:
    if not unicode:
        return "#" * round(width * count / peak)
    eighths = round(8 * width * count / peak)
    full, part = divmod(eighths, 8)
    return _BLOCKS[-1] * full + (_BLOCKS[part] if part else "")


def _sparkline(values: list[int], unicode: bool) -> str:
    peak = max(values) or 1
    levels = _SPARKS if unicode else " .:-=+*#%"
    top = len(levels) - 1
    # Any sale at all shows as at least the lowest mark, so "none" and "a few" differ.
    return "".join(levels[max(1, round(top * v / peak)) if v else 0] for v in values)


def _money(amount: float) -> str:
    return f"${amount:,.0f}" if float(amount).is_integer() else f"${amount:,.2f}"


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
