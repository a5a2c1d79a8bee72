"""Ordered per key, parallel across keys (eventbus._keyed), on TestBus and a real redis-server.

The property: for any interleaving of keys, any handler delays and any first-attempt failures
(retried), each key's messages are handled one at a time and in publish order, never more than
``concurrency`` run at once; and different keys do run in parallel.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus import ConfigError, Context, Message, Runner, on
from eventbus._backends.memory import MemoryBroker
from tests.buses import settle

msgspec = pytest.importorskip("msgspec", reason="keyed tests use typed payloads (eventbus[msgspec])")


class Job(msgspec.Struct):
    key: str
    seq: int
    delay: float  # milliseconds
    fail_first: bool = False


_channels = itertools.count()

# (key, delay in ms, fail on the first attempt)
JOBS = st.lists(
    st.tuples(st.sampled_from("abcde"), st.integers(min_value=0, max_value=4), st.booleans()),
    min_size=1,
    max_size=40,
)


async def run_jobs(jobs: list[tuple[str, int, bool]], concurrency: int, url: str | None) -> None:
    channel = f"jobs:{next(_channels)}"
    running: dict[str, int] = {}
    order: dict[str, list[int]] = {}
    attempts: dict[int, int] = {}
    overlap = {"now": 0, "max": 0}

    @on(channel, concurrency=concurrency, key="key", retries=1, backoff=0.001, name="keyed")
    async def handler(job: Job, ctx: Context) -> None:
        assert running.get(job.key, 0) == 0, f"two messages of key {job.key} at once"
        running[job.key] = 1
        overlap["now"] += 1
        overlap["max"] = max(overlap["max"], overlap["now"])
        try:
            await asyncio.sleep(job.delay / 1000)
            attempts[job.seq] = attempts.get(job.seq, 0) + 1
            if job.fail_first and attempts[job.seq] == 1:
                raise RuntimeError("first attempt fails")
            order.setdefault(job.key, []).append(job.seq)
        finally:
            running[job.key] = 0
            overlap["now"] -= 1

    runner = Runner([handler], broker=MemoryBroker(), grace=5.0) if url is None else Runner([handler], url=url)
    async with runner:
        assert runner.publisher is not None
        for seq, (key, delay, fail) in enumerate(jobs):
            await runner.publisher.publish(channel, Job(key, seq, delay, fail))
        await settle(runner)
        stats = runner.stats.handlers["keyed"]
        assert (stats.failed, stats.rejected, stats.dropped) == (0, 0, 0)
    expected: dict[str, list[int]] = {}
    for seq, (key, _, _) in enumerate(jobs):
        expected.setdefault(key, []).append(seq)
    assert order == expected  # every message handled once, each key in publish order
    assert overlap["max"] <= concurrency


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=JOBS, concurrency=st.integers(min_value=1, max_value=6))
def test_per_key_order_property_on_testbus(jobs: list[tuple[str, int, bool]], concurrency: int) -> None:
    asyncio.run(run_jobs(jobs, concurrency, None))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(jobs=JOBS, concurrency=st.integers(min_value=1, max_value=6))
def test_per_key_order_property_on_redis(
    redis_server: Any, jobs: list[tuple[str, int, bool]], concurrency: int
) -> None:
    asyncio.run(run_jobs(jobs, concurrency, redis_server.url))


@pytest.mark.parametrize("backend", ["memory", "redis"])
async def test_different_keys_really_run_in_parallel(backend: str, request: pytest.FixtureRequest) -> None:
    """Four keys, concurrency 4: the handlers of all four are running at the same moment."""
    all_in = asyncio.Event()
    running: set[str] = set()
    most = 0

    @on("parallel", concurrency=4, key=lambda job: job.key, name="parallel")
    async def handler(job: Job, ctx: Context) -> None:
        nonlocal most
        running.add(job.key)
        most = max(most, len(running))
        if len(running) == 4:
            all_in.set()
        # Waits for the others: only possible if the four keys really run at once.
        await asyncio.wait_for(all_in.wait(), 10)
        running.discard(job.key)

    url = request.getfixturevalue("redis_server").url if backend == "redis" else None
    runner = Runner([handler], broker=MemoryBroker()) if url is None else Runner([handler], url=url)
    async with runner:
        assert runner.publisher is not None
        for seq, key in enumerate("wxyz"):
            await runner.publisher.publish("parallel", Job(key, seq, 0))
        await asyncio.wait_for(all_in.wait(), 10)
        assert await runner.drain(10)
    assert most == 4


async def test_raw_handler_keyed_by_a_function_of_the_message() -> None:
    seen: list[tuple[str, bytes]] = []

    @on("raw:a", "raw:b", concurrency=2, key=lambda msg: msg.channel, name="raw")
    async def handler(msg: Message, ctx: Context) -> None:
        await asyncio.sleep(0.001 if msg.channel == "raw:a" else 0)
        seen.append((msg.channel, msg.data))

    async with Runner([handler], broker=MemoryBroker()) as runner:
        assert runner.publisher is not None
        for i in range(10):
            await runner.publisher.publish("raw:a" if i % 2 else "raw:b", str(i))
        assert await runner.drain(10)
    assert [d for c, d in seen if c == "raw:a"] == [b"1", b"3", b"5", b"7", b"9"]
    assert [d for c, d in seen if c == "raw:b"] == [b"0", b"2", b"4", b"6", b"8"]


async def test_a_retried_message_still_goes_before_the_later_ones_of_its_key() -> None:
    # Retries run while the key is held: the next message of the key waits for the retry, the
    # other keys go on meanwhile.
    handled: list[tuple[str, int]] = []
    failed_once: set[int] = set()

    @on("retry:k", concurrency=4, key=lambda msg: msg.text[0], retries=2, backoff=0.01, name="retried")
    async def handler(msg: Message, ctx: Context) -> None:
        seq = int(msg.text[1:])
        if seq % 3 == 0 and seq not in failed_once:
            failed_once.add(seq)
            raise ValueError("first attempt fails")
        handled.append((msg.text[0], seq))

    async with Runner([handler], broker=MemoryBroker()) as runner:
        assert runner.publisher is not None
        for seq in range(30):
            await runner.publisher.publish("retry:k", f"{'abc'[seq % 3]}{seq}")
        assert await runner.drain(30)
        stats = runner.stats.handlers["retried"]
        assert (stats.handled, stats.retried, stats.failed) == (30, 10, 0)
    for key in "abc":
        seqs = [seq for k, seq in handled if k == key]
        assert seqs == sorted(seqs) and len(seqs) == 10, (key, seqs)


async def test_a_key_that_cannot_be_computed_is_refused() -> None:
    seen: list[Job] = []

    @on("k", concurrency=2, key=lambda job: {"unhashable": job.key}, name="bad_key")
    async def handler(job: Job, ctx: Context) -> None:
        seen.append(job)

    async with Runner([handler], broker=MemoryBroker()) as runner:
        assert runner.publisher is not None
        await runner.publisher.publish("k", Job("a", 1, 0))
        await runner.publisher.publish("k", b"not json")
        assert await runner.drain(10)
        stats = runner.stats.handlers["bad_key"]
        assert (stats.rejected, stats.failed, stats.retried) == (2, 0, 0)
    assert seen == []


def test_key_option_is_validated() -> None:
    with pytest.raises(ConfigError, match="key must be a function of the payload or a field name"):
        on("x", key=3)
    with pytest.raises(ConfigError, match="key must be"):
        on("x", key="")
