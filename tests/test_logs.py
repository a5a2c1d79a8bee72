"""Logging set-up (levels in any case, worker tags, leaving an application's own set-up alone), and the
rate limit that keeps a flood of bad input from becoming a flood of log lines."""

from __future__ import annotations

import logging
import re

import pytest

from eventbus import Context, Message, Reject, on
from eventbus._logs import LOG_FORMAT, LineLimit, configure, log_format, parse_level, worker_tag
from tests.fault.helpers import eventually, running
from tests.redis_server import RedisServer


@pytest.mark.parametrize(("given", "level"), [("DEBUG", "debug"), ("Info", "info"), ("warning", "warning")])
def test_levels_in_any_case(given: str, level: str) -> None:
    assert parse_level(given) == level


def test_an_unknown_level_names_the_choices() -> None:
    with pytest.raises(ValueError, match="debug, info, warning, error"):
        parse_level("loud")


def test_worker_processes_tag_their_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVENTBUS_WORKER", raising=False)
    assert worker_tag() is None and log_format() == LOG_FORMAT
    monkeypatch.setenv("EVENTBUS_WORKER", "1")
    monkeypatch.setenv("EVENTBUS_WORKERS", "4")
    assert worker_tag() == "worker 2/4"
    assert "[worker 2/4] %(name)s" in log_format()


def test_configure_leaves_an_application_configured_logging_alone() -> None:
    # pytest's own capture handlers sit on the root logger, as an application's would.
    assert logging.getLogger().handlers
    before = list(logging.getLogger().handlers)
    assert configure("debug") is False
    assert logging.getLogger().handlers == before


# -- the rate limit of per-message lines --------------------------------------------------------

LIMITED = logging.getLogger("eventbus.test-limit")
SUMMARY = re.compile(r"^handler (\S+): (\d+) '([^']+)' line\(s\) not logged in the last [\d.]+s \(rate limit")


def summaries(records: list[logging.LogRecord]) -> dict[tuple[str, str], int]:
    """(handler, reason) -> lines not logged, summed over every summary line."""
    counts: dict[tuple[str, str], int] = {}
    for record in records:
        if match := SUMMARY.match(record.getMessage()):
            key = (match[1], match[3])
            counts[key] = counts.get(key, 0) + int(match[2])
    return counts


def test_the_first_lines_are_whole_then_one_summary_counts_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LIMITED.name)
    limit = LineLimit(LIMITED, "handler h", burst=3, window=3600.0)
    assert [limit.allow("rejected") for _ in range(1000)] == [True] * 3 + [False] * 997
    assert [limit.allow("failed", logging.ERROR) for _ in range(4)] == [True] * 3 + [False]  # reasons are apart
    assert not caplog.records  # held back: nothing written, nothing formatted
    limit.flush()
    assert summaries(caplog.records) == {("h", "rejected"): 997, ("h", "failed"): 1}
    assert {r.getMessage().split("'")[1]: r.levelno for r in caplog.records} == {
        "rejected": logging.WARNING,
        "failed": logging.ERROR,  # a summary has the level of the lines it stands for
    }
    caplog.clear()
    limit.flush()
    assert not caplog.records  # nothing counted twice
    assert limit.allow("rejected")  # a new window starts whole


def test_a_window_that_ended_is_summed_up_by_the_next_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG, LIMITED.name)
    now = [100.0]
    monkeypatch.setattr("eventbus._logs.time.monotonic", lambda: now[0])
    limit = LineLimit(LIMITED, "handler h", burst=1, window=60.0)
    assert limit.allow("dropped") and not limit.allow("dropped") and not limit.allow("dropped")
    now[0] += 59.0
    assert not limit.allow("dropped") and not caplog.records
    now[0] += 1.0  # the window is over: its summary first, then this line whole
    assert limit.allow("dropped")
    assert summaries(caplog.records) == {("h", "dropped"): 3}


async def test_a_summary_is_written_when_its_window_ends_without_another_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, LIMITED.name)
    limit = LineLimit(LIMITED, "handler h", burst=1, window=0.05)
    assert limit.allow("retrying") and not limit.allow("retrying")
    await eventually(lambda: bool(caplog.records), what="the summary of the window")
    assert summaries(caplog.records) == {("h", "retrying"): 1}


def test_a_level_that_is_off_is_neither_logged_nor_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LIMITED.name)
    limit = LineLimit(LIMITED, "handler h", burst=1, window=3600.0)
    assert not any(limit.allow("dead-lettered", logging.DEBUG) for _ in range(10))
    limit.flush()
    assert not caplog.records


# -- a flood of bad input against a real server: the log stays a few lines ---------------------

REJECTED, INVALID, FAILING, OVERSIZED = 10_000, 1_000, 1_000, 500


async def test_a_flood_of_bad_input_logs_a_bounded_number_of_lines(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Each kind of bad input, thousands of times, through a user who may not write dead letters."""
    with own_redis_server.client() as admin:
        admin.execute_command("ACL", "SETUSER", "flooded", "on", ">pw", "~*", "&*", "+@all", "-xadd")
    url = f"redis://flooded:pw@127.0.0.1:{own_redis_server.port}/0"

    @on("flood:reject", name="refuser")
    async def refuser(msg: Message, ctx: Context) -> None:
        raise Reject("not an order")

    @on("flood:utf8", name="reader")
    async def reader(msg: Message, ctx: Context) -> None:
        _ = msg.text

    @on("flood:fail", name="broken", retries=1, backoff=0)
    async def broken(msg: Message, ctx: Context) -> None:
        raise RuntimeError("upstream said no")

    @on("flood:big", name="small")
    async def small(msg: Message, ctx: Context) -> None: ...

    caplog.set_level(logging.INFO, "eventbus")
    async with running([refuser, reader, broken, small], url, max_payload=64) as runner:
        with own_redis_server.client() as admin:
            pipe = admin.pipeline(transaction=False)
            for channel, payload, count in (
                ("flood:reject", b"{}", REJECTED),
                ("flood:utf8", b"\xff\xfe", INVALID),
                ("flood:fail", b"x", FAILING),
                ("flood:big", b"x" * 100, OVERSIZED),
            ):
                for _ in range(count):
                    pipe.publish(channel, payload)
            pipe.execute()
        stats = runner.stats.handlers
        await eventually(
            lambda: (
                (stats["refuser"].rejected, stats["reader"].rejected, stats["broken"].failed)
                == (REJECTED, INVALID, FAILING)
            ),
            timeout=120,
            what="every bad message handled",
        )
        assert await runner.drain(30)
        assert sum(s.dead_lettered for s in stats.values()) == 0  # every dead-letter write was denied
    assert stats["small"].rejected == OVERSIZED

    records = [r for r in caplog.records if r.name.startswith("eventbus")]
    whole: dict[tuple[str, str], int] = {}
    line_kinds = {
        "rejected": r"handler (\w+) rejected a message on '[^']+': not an order",
        "invalid payload": r"handler (\w+) rejected a message on '[^']+': invalid payload",
        "retrying": r"handler (\w+) failed on '[^']+' \(attempt 1 of 2\), retrying",
        "failed": r"handler (\w+) failed on '[^']+' after 2 attempt",
        "refused": r"handler (\w+) refused a message on '[^']+': payload of 100 bytes",
        "dead letter not written": r"could not dead-letter a message of handler (\w+) on .*NoPermissionError",
    }
    for record in records:
        for reason, pattern in line_kinds.items():
            if match := re.match(pattern, record.getMessage()):
                whole[(match[1], reason)] = whole.get((match[1], reason), 0) + 1
    expected = {
        ("refuser", "rejected"): REJECTED,
        ("refuser", "dead letter not written"): REJECTED,
        ("reader", "invalid payload"): INVALID,
        ("reader", "dead letter not written"): INVALID,
        ("broken", "retrying"): FAILING,
        ("broken", "failed"): FAILING,
        ("broken", "dead letter not written"): FAILING,
        ("small", "refused"): OVERSIZED,
        ("small", "dead letter not written"): OVERSIZED,
    }
    summed = summaries(records)
    # The first ones whole (5 per handler and reason in a minute), the rest counted, none lost.
    assert set(whole) == set(expected) and all(count <= 5 for count in whole.values()), whole
    assert {key: whole[key] + summed.get(key, 0) for key in expected} == expected
    assert set(summed) <= set(expected)
    refused = [r.getMessage() for r in records if "refused a message" in r.getMessage()]
    assert all("raise the cap with --max-payload, or Runner(max_payload=...)" in line for line in refused)
    failures = [r for r in records if "after 2 attempt" in r.getMessage()]
    assert failures and all(r.exc_info is not None for r in failures)  # the whole ones keep their traceback
    # 9 kinds of line, each at most 5 whole and a summary a minute, and the start and stop lines:
    # a bounded log, where one line per message would have been 39,000 (plus 8 lines per traceback).
    assert len(records) <= 9 * 6 * 2 + 10, [r.getMessage() for r in records]
    assert len(caplog.text.splitlines()) <= 400
