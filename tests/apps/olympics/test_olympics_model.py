"""Orders, the seeded simulator and the report rendering, without Redis."""

from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import pytest

from apps.olympics import EVENT_PRICES, InvalidOrder, Order, generate_orders, parse_order
from apps.olympics.orders import format_amount, hour_of_day
from apps.olympics.report import EventSales, PngUnavailable, SalesReport, decode_histogram, render_report, write_png


def test_orders_are_reproducible_from_the_seed() -> None:
    first, again, other = generate_orders(500, 42), generate_orders(500, 42), generate_orders(500, 43)
    assert first == again
    assert first != other
    assert len({o.id for o in first}) == 500
    assert not {o.id for o in first} & {o.id for o in other}  # runs with different seeds add up
    assert [o.ts for o in first] == sorted(o.ts for o in first)  # the day plays in order
    assert {o.event for o in first} == set(EVENT_PRICES)
    assert all(o.cost == o.qty * EVENT_PRICES[o.event] and 1 <= o.qty <= 9 for o in first)
    assert len({o.hour for o in first}) == 24
    assert generate_orders(0, 1) == []
    with pytest.raises(ValueError, match="the number of orders must be >= 0"):
        generate_orders(-1, 1)


def test_hour_of_day_is_utc() -> None:
    for ts in (0, 3599, 3600, 1_595_548_800 + 23 * 3600 + 59, 1_700_000_000):
        assert hour_of_day(ts) == time.gmtime(ts).tm_hour


def test_order_round_trips_through_its_hash() -> None:
    order = Order("a-1", "Zoe", "Closing Ceremony", 4, 360.0, 1_595_600_000)
    stored = {k.encode(): v.encode() for k, v in order.fields().items()}  # as HGETALL returns it
    assert order.fields()["cost"] == "360"
    assert parse_order("a-1", stored) == order
    assert parse_order("a-1", {**order.fields(), "cost": "12.5"}).cost == 12.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, "no hash"),
        ({"who": "", "event": "E", "qty": "1", "cost": "1", "ts": "1"}, "missing field(s) who"),
        ({"who": "W", "event": "E", "qty": "1.5", "cost": "1", "ts": "1"}, "malformed"),
        ({"who": "W", "event": "E", "qty": "2000000", "cost": "1", "ts": "1"}, "not between 1 and"),
        ({"who": "W", "event": "E", "qty": "1", "cost": "-1", "ts": "1"}, "cost '-1'"),
        ({"who": "W", "event": "E", "qty": "1", "cost": "inf", "ts": "1"}, "cost 'inf'"),
        ({"who": "W", "event": "E", "qty": "1", "cost": "1", "ts": "soon"}, "malformed"),
        ({b"who": b"\xff", b"event": b"E", b"qty": b"1", b"cost": b"1", b"ts": b"1"}, "not UTF-8"),
    ],
)
def test_invalid_orders_say_what_is_wrong(raw: dict[object, object], message: str) -> None:
    with pytest.raises(InvalidOrder, match=r"order 'o9'") as info:
        parse_order("o9", raw)
    assert message in str(info.value)


def test_format_amount() -> None:
    assert (format_amount(120.0), format_amount(12.5), format_amount(0)) == ("120", "12.5", "0")


def test_decode_histogram_reads_big_endian_u32_buckets() -> None:
    assert decode_histogram(None) == [0] * 24
    raw = struct.pack(">3I", 0, 7, 2**32 - 1)  # a key Redis grew only as far as hour 2
    assert decode_histogram(raw) == [0, 7, 2**32 - 1] + [0] * 21


def sample_report() -> SalesReport:
    judo = EventSales("Womens Judo", orders=2, tickets=5, sales=175.0, histogram=[0] * 10 + [5] + [0] * 13)
    opening = EventSales("Opening Ceremony", orders=1, tickets=3, sales=360.0, histogram=[0] * 19 + [3] + [0] * 4)
    overall = [a + b for a, b in zip(judo.histogram, opening.histogram, strict=True)]
    return SalesReport([opening, judo], overall)


def test_render_report() -> None:
    text = render_report(sample_report(), width=10)
    lines = text.splitlines()
    assert any(line.split() == ["Opening", "Ceremony", "1", "3", "$360"] for line in lines)
    assert any(line.split() == ["Total", "3", "8", "$535"] for line in lines)
    assert "  10h ██████████ 5" in lines
    assert any(line.startswith("  19h ██████") and line.endswith(" 3") for line in lines)
    assert "Check: the histogram counts 8 tickets, as the sales summary does." in lines
    ascii_text = render_report(sample_report(), width=10, unicode=False)
    assert ascii_text.isascii() and "  10h ########## 5" in ascii_text.splitlines()


def test_render_report_flags_a_histogram_that_disagrees() -> None:
    report = sample_report()
    report.events[0].tickets += 1  # as if the sales listener had skipped an order
    assert "Warning: the histogram counts 8 tickets but the sales summary 9" in render_report(report)
    assert render_report(SalesReport([], [0] * 24)).startswith("No sales yet")


def test_png_needs_matplotlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    with pytest.raises(PngUnavailable, match="pip install matplotlib"):
        write_png(sample_report(), tmp_path / "chart.png")
    assert not (tmp_path / "chart.png").exists()


def test_png_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    write_png(sample_report(), tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
