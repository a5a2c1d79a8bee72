"""A property of batch handlers (eventbus._batch): whatever the batch sizes, windows, keys,
concurrency and failures, no message is lost or handled twice, no batch is larger than its
``max_size``, and order holds as the rules say: batches start in publish order without a key, and
per key, across batches, with one.

Failures are whole-batch exceptions or :class:`~eventbus.BatchFailed` naming some messages, each
decided by the message and its attempt, so a run is reproducible from hypothesis's example.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus import Batch, BatchFailed, Context, on
from eventbus.testing import TestBus

msgspec = __import__("pytest").importorskip("msgspec", reason="the keyed case decodes a msgspec Struct")


class Item(msgspec.Struct):
    n: int
    key: str


@dataclass(frozen=True)
class Case:
    count: int
    max_size: int
    max_wait: float
    concurrency: int
    keyed: bool
    retries: int
    partial: bool  # BatchFailed naming the failing messages, else the whole batch raises
    # (message number, attempt) pairs that fail: a message fails on each attempt listed
    failing: frozenset[tuple[int, int]]


@st.composite
def cases(draw: st.DrawFn) -> Case:
    count = draw(st.integers(1, 60))
    retries = draw(st.integers(0, 2))
    failing = draw(
        st.frozensets(st.tuples(st.integers(0, count - 1), st.integers(1, retries + 1)), max_size=count // 2 + 1)
    )
    return Case(
        count=count,
        max_size=draw(st.integers(1, 9)),
        max_wait=draw(st.sampled_from([0.001, 0.005, 0.02])),
        concurrency=draw(st.integers(1, 4)),
        keyed=draw(st.booleans()),
        retries=retries,
        partial=draw(st.booleans()),
        failing=failing,
    )


async def run(case: Case) -> tuple[list[list[int]], list[int], list[int]]:
    calls: list[list[int]] = []  # every call, with its messages' numbers
    handled: list[int] = []  # in the order they were handled
    attempts: dict[int, int] = {}
    options = {"key": "key"} if case.keyed else {}

    @on(
        "items",
        batch=Batch(max_size=case.max_size, max_wait=case.max_wait),
        concurrency=case.concurrency,
        retries=case.retries,
        backoff=0.0,
        **options,
    )
    async def work(items: list[Item], ctx: Context) -> None:
        calls.append([item.n for item in items])
        failed = {}
        for i, item in enumerate(items):
            attempts[item.n] = attempts.get(item.n, 0) + 1
            if (item.n, attempts[item.n]) in case.failing:
                failed[i] = RuntimeError(f"item {item.n} attempt {attempts[item.n]}")
        await asyncio.sleep(0)
        if failed and not case.partial:
            raise RuntimeError("the whole batch")
        handled.extend(item.n for i, item in enumerate(items) if i not in failed)
        if failed:
            raise BatchFailed(failed)

    async with TestBus([work]) as bus:
        for n in range(case.count):
            await bus.publish("items", Item(n, f"k{n % 3}"))
        await bus.drain(timeout=60)
        dead = sorted(int(msgspec.json.decode(letter.payload, type=Item).n) for letter in await bus.dead_letters())
    return calls, handled, dead


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_batches_never_lose_repeat_or_reorder(case: Case) -> None:
    calls, handled, dead = asyncio.run(run(case))
    # Nothing lost, nothing handled twice: each message is handled once or dead-lettered once.
    assert sorted(handled + dead) == list(range(case.count))
    assert len(set(handled)) == len(handled)
    assert all(1 <= len(call) <= case.max_size for call in calls)
    # A message fails for good only when it failed on every attempt it was given.
    for n in dead:
        assert (n, case.retries + 1) in case.failing or not case.partial
    first_calls = [n for call in calls for n in call if n not in seen_before(calls, call, n)]
    if not case.keyed:
        # Batches start in publish order: each message's first call comes in publish order.
        assert first_calls == sorted(first_calls)
    else:
        # Per key, messages are handled in publish order, across batches, when a retry carries
        # the whole batch (BatchFailed retries only some, which may pass the others of its batch).
        for key in range(3):
            mine = [n for n in handled if n % 3 == key]
            if not case.partial:
                assert mine == sorted(mine)
            firsts = [n for n in first_calls if n % 3 == key]
            assert firsts == sorted(firsts)


def seen_before(calls: list[list[int]], call: list[int], n: int) -> set[int]:
    """The messages of ``calls`` before ``call`` (by identity), to tell a first call from a retry."""
    earlier: set[int] = set()
    for other in calls:
        if other is call:
            return earlier
        earlier.update(other)
    return earlier
