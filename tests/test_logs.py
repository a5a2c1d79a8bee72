"""Logging set-up: levels in any case, worker tags, and leaving an application's own set-up alone."""

from __future__ import annotations

import logging

import pytest

from eventbus.logs import LOG_FORMAT, Every, configure, log_format, parse_level, worker_tag


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


def test_every_lets_one_line_through_per_interval_and_counts_the_rest() -> None:
    every = Every(3600.0)
    assert every.due("a") == 1
    assert every.due("a") == 0 and every.due("a") == 0
    assert every.due("b") == 1  # keys are independent
