"""Batch handlers (eventbus._batch): each rule on TestBus and on a real redis-server.

A batch closes at ``max_size`` or ``max_wait`` after its first message, never earlier; batches of
one handler start in publish order; per key, the order holds across batches; a failing batch is
retried whole, then each message is dead-lettered on its own; BatchFailed narrows that to the
messages it names; a typed batch refuses an undecodable message alone; streams acknowledge a
batch's entries once it is handled, and leave failed ones pending.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from eventbus import Batch, BatchFailed, Channel, Context, Message, Reject, on, on_stream
from eventbus._deadletter import DeadLetterStore
from eventbus.testing import TestBus
from tests.buses import publish, running, settle, wait_until
from tests.redis_server import RedisServer

msgspec = pytest.importorskip("msgspec", reason="typed batch handlers need msgspec (eventbus[msgspec])")


class Order(msgspec.Struct):
    id: int
    customer: str = "c"


BACKENDS = ["memory", "redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def url(backend: str, request: pytest.FixtureRequest) -> str | None:
    if backend == "memory":
        return None
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url


async def test_a_full_batch_closes_at_max_size_and_a_partial_one_after_max_wait(backend: str, url: str | None) -> None:
    batches: list[list[bytes]] = []

    @on("orders", batch=Batch(max_size=3, max_wait=0.3))
    async def collect(msgs: list[Message], ctx: Context) -> None:
        batches.append([m.data for m in msgs])

    async with running(backend, [collect], url) as runner:
        for i in range(7):
            await publish(runner, "orders", str(i))
        await settle(runner)  # drain waits for the partial batch's window
    assert batches == [[b"0", b"1", b"2"], [b"3", b"4", b"5"], [b"6"]]
    stats = runner.stats.handlers["collect"]
    assert (stats.handled, stats.batches, stats.batch_size_total) == (7, 3, 7)


async def test_a_lone_message_waits_the_whole_window(backend: str, url: str | None) -> None:
    seen: list[float] = []
    loop = asyncio.get_running_loop()

    @on("orders", batch=Batch(max_size=100, max_wait=0.5))
    async def collect(msgs: list[Message], ctx: Context) -> None:
        seen.append(loop.time())

    async with running(backend, [collect], url) as runner:
        sent = loop.time()
        await publish(runner, "orders", b"x")
        await settle(runner)
    assert len(seen) == 1 and seen[0] - sent >= 0.5  # never earlier (later is allowed: a loaded machine)


async def test_typed_batch_decodes_each_and_refuses_an_invalid_one_alone(backend: str, url: str | None) -> None:
    got: list[list[int]] = []

    @on("orders", batch=Batch(max_size=4, max_wait=0.2))
    async def store(orders: list[Order], ctx: Context, msgs: list[Message]) -> None:
        assert len(orders) == len(msgs)
        got.append([o.id for o in orders])

    async with running(backend, [store], url) as runner:
        for data in (Order(1), b"not json", Order(2), Order(3)):
            await publish(runner, "orders", data)
        await settle(runner)
        letters = await DeadLetterStore(runner.redis).list()
    assert got == [[1, 2, 3]]
    assert [d.payload for d in letters] == [b"not json"] and "invalid payload" in letters[0].error
    stats = runner.stats.handlers["store"]
    assert (stats.handled, stats.rejected, stats.retried) == (3, 1, 0)


async def test_a_failing_batch_is_retried_whole_then_each_message_dead_lettered(backend: str, url: str | None) -> None:
    calls: list[list[bytes]] = []

    @on("orders", batch=Batch(max_size=3, max_wait=0.2), retries=2, backoff=0.01)
    async def fails(msgs: list[Message], ctx: Context) -> None:
        calls.append([m.data for m in msgs])
        raise RuntimeError("the warehouse is down")

    async with running(backend, [fails], url) as runner:
        for i in range(3):
            await publish(runner, "orders", str(i))
        await settle(runner)
        letters = await DeadLetterStore(runner.redis).list()
    assert calls == [[b"0", b"1", b"2"]] * 3
    assert sorted(d.payload for d in letters) == [b"0", b"1", b"2"]
    assert all(d.error == "RuntimeError: the warehouse is down" and d.attempts == 3 for d in letters)
    stats = runner.stats.handlers["fails"]
    assert (stats.failed, stats.retried, stats.dead_lettered, stats.handled) == (3, 6, 3, 0)


async def test_batch_failed_retries_and_dead_letters_only_the_named_messages(backend: str, url: str | None) -> None:
    calls: list[list[bytes]] = []

    @on("orders", batch=Batch(max_size=4, max_wait=0.2), retries=1, backoff=0.01)
    async def partly(msgs: list[Message], ctx: Context) -> None:
        calls.append([m.data for m in msgs])
        errors: dict[int, BaseException] = {}
        for i, msg in enumerate(msgs):
            if msg.data == b"refused":
                errors[i] = Reject("no such customer")
            elif msg.data.startswith(b"flaky"):
                errors[i] = TimeoutError("upstream")
        if errors:
            raise BatchFailed(errors)

    async with running(backend, [partly], url) as runner:
        for data in (b"ok-1", b"refused", b"flaky", b"ok-2"):
            await publish(runner, "orders", data)
        await settle(runner)
        letters = await DeadLetterStore(runner.redis).list()
    # The retry carries only the retryable one; the Reject is dead-lettered at once.
    assert calls == [[b"ok-1", b"refused", b"flaky", b"ok-2"], [b"flaky"]]
    errors = {d.payload: d.error for d in letters}
    assert errors == {b"refused": "rejected: no such customer", b"flaky": "TimeoutError: upstream"}
    stats = runner.stats.handlers["partly"]
    assert (stats.handled, stats.rejected, stats.failed, stats.retried) == (2, 1, 1, 1)


async def test_batch_failed_naming_a_position_the_batch_lacks_fails_the_batch() -> None:
    @on("orders", batch=Batch(max_size=2, max_wait=0.2))
    async def confused(msgs: list[Message], ctx: Context) -> None:
        raise BatchFailed([5])

    async with TestBus([confused]) as bus:
        await bus.publish("orders", b"a")
        await bus.publish("orders", b"b")
        await bus.drain()
        letters = await bus.dead_letters()
    assert sorted(d.payload for d in letters) == [b"a", b"b"]
    assert all("IndexError: BatchFailed names position(s) [5] of a batch of 2" in d.error for d in letters)


async def test_with_concurrency_several_batches_run_at_once(backend: str, url: str | None) -> None:
    running_now, most = 0, 0
    release = asyncio.Event()

    @on("orders", batch=Batch(max_size=2, max_wait=5.0), concurrency=3)
    async def slow(msgs: list[Message], ctx: Context) -> None:
        nonlocal running_now, most
        running_now += 1
        most = max(most, running_now)
        if most < 3:
            await asyncio.wait_for(release.wait(), 30)
        release.set()
        running_now -= 1

    async with running(backend, [slow], url) as runner:
        for i in range(6):
            await publish(runner, "orders", str(i))
        await settle(runner)
    assert most == 3


async def test_batches_start_in_publish_order(backend: str, url: str | None) -> None:
    started: list[list[int]] = []

    @on("orders", batch=Batch(max_size=5, max_wait=0.05), concurrency=4)
    async def ordered(orders: list[int], ctx: Context) -> None:
        started.append(orders)
        await asyncio.sleep(0.001 * (len(started) % 3))

    async with running(backend, [ordered], url) as runner:
        for i in range(200):
            await publish(runner, "orders", i)
        await settle(runner)
    assert [n for batch in started for n in batch] == list(range(200))


async def test_per_key_order_holds_across_batches(backend: str, url: str | None) -> None:
    seen: dict[str, list[int]] = {}

    @on("orders", batch=Batch(max_size=3, max_wait=0.05), concurrency=4, key="customer")
    async def keyed(orders: list[Order], ctx: Context) -> None:
        await asyncio.sleep(0.001 * (orders[0].id % 4))
        for order in orders:
            seen.setdefault(order.customer, []).append(order.id)

    async with running(backend, [keyed], url) as runner:
        for i in range(300):
            await publish(runner, "orders", Order(i, customer=f"c{i % 7}"))
        await settle(runner)
    assert {c: ids == sorted(ids) for c, ids in seen.items()} == {f"c{k}": True for k in range(7)}
    assert sum(map(len, seen.values())) == 300


async def test_middleware_sees_the_batch() -> None:
    seen: list[int] = []

    async def count(msg: Message, ctx: Context, call_next: Any) -> Any:
        seen.append(len(getattr(msg, "messages", [])))
        return await call_next(msg, ctx)

    @on("orders", batch=Batch(max_size=3, max_wait=0.1), middleware=[count])
    async def collect(msgs: list[Message], ctx: Context) -> None:
        pass

    async with TestBus([collect]) as bus:
        for i in range(4):
            await bus.publish("orders", str(i))
        await bus.drain()
    assert seen == [3, 1]


async def test_a_plain_def_batch_handler_runs_in_a_thread() -> None:
    got: list[list[str]] = []

    @on("orders", batch=Batch(max_size=2, max_wait=0.1))
    def blocking(texts: list[str], ctx: Context) -> None:
        got.append(texts)

    async with TestBus([blocking]) as bus:
        for text in ("a", "b", "c"):
            await bus.publish("orders", text)
        await bus.drain()
    assert got == [["a", "b"], ["c"]]


async def test_stream_batch_acknowledges_handled_entries_and_leaves_failed_ones_pending(
    redis_server: RedisServer,
) -> None:
    attempts: list[list[bytes]] = []

    @on_stream("jobs", batch=Batch(max_size=10, max_wait=0.2), block=0.05, max_deliveries=3, claim_idle=60)
    async def work(msgs: list[Message], ctx: Context) -> None:
        attempts.append([m.data for m in msgs])
        failed = [i for i, m in enumerate(msgs) if m.data == b"bad"]
        if failed:
            raise BatchFailed(failed, "cannot do it")

    async with running("redis", [work], redis_server.url) as runner:
        assert runner.publisher is not None
        for data in (b"a", b"bad", b"c"):
            await runner.publisher.append("jobs", data)
        await wait_until(
            lambda: runner.stats.handlers["work"].handled == 2 and runner.stats.handlers["work"].failed == 1
        )
        with redis_server.client() as client:
            pending = client.xpending("jobs", "work")
            await wait_until(lambda: client.xpending("jobs", "work")["pending"] == 1)
            [entry] = client.xpending_range("jobs", "work", "-", "+", 10)
            entries = dict(client.xrange("jobs"))
    assert pending["pending"] >= 1
    assert entries[entry["message_id"]] == {b"data": b"bad"}
    assert attempts[0] == [b"a", b"bad", b"c"]


async def test_a_message_after_a_batch_closed_by_time_is_not_left_unseen(backend: str, url: str | None) -> None:
    """A task that woke at a batch's deadline leaves its waiter behind: the next message must still
    wake a task (it once stayed in the inbox until the grace period ran out)."""
    batches: list[list[bytes]] = []

    @on("orders", batch=Batch(max_size=10, max_wait=0.05))
    async def collect(msgs: list[Message], ctx: Context) -> None:
        batches.append([m.data for m in msgs])

    async with running(backend, [collect], url) as runner:
        for data in (b"first", b"second", b"third"):
            await publish(runner, "orders", data)
            await settle(runner)
    assert batches == [[b"first"], [b"second"], [b"third"]]


async def test_a_stream_batch_is_acknowledged_with_one_xack(redis_server: RedisServer) -> None:
    got: list[int] = []

    @on_stream("audit", batch=Batch(max_size=50, max_wait=0.2), block=0.05)
    async def audit(msgs: list[Message], ctx: Context) -> None:
        got.append(len(msgs))

    with redis_server.client() as client:
        for i in range(20):
            client.xadd("audit", {"data": str(i)})
        client.config_resetstat()
        async with running("redis", [audit], redis_server.url) as runner:
            await wait_until(lambda: runner.stats.handlers["audit"].handled == 20)
            await wait_until(lambda: client.xpending("audit", "audit")["pending"] == 0)
        xack = client.info("commandstats").get("cmdstat_xack", {})
    assert got == [20]
    assert xack.get("calls") == 1


async def test_messages_held_in_a_batch_count_against_the_inbox_budget() -> None:
    @on("orders", batch=Batch(max_size=100, max_wait=0.3), inbox_bytes=1000)
    async def collect(msgs: list[Message], ctx: Context) -> None:
        pass

    async with TestBus([collect]) as bus:
        for _ in range(10):
            await bus.publish("orders", b"x" * 100)  # 200 bytes each against the budget
        await bus.drain()
        stats = bus.handler_stats("collect")
        assert (stats.handled, stats.dropped, stats.batches) == (5, 5, 1)
        await bus.publish("orders", b"x" * 100)  # the budget is free again once the batch ran
        await bus.drain()
        assert bus.handler_stats("collect").handled == 6


async def test_a_batch_still_open_when_the_grace_period_ends_is_abandoned_and_counted() -> None:
    @on("orders", batch=Batch(max_size=100, max_wait=60.0))
    async def patient(msgs: list[Message], ctx: Context) -> None:
        raise AssertionError("the window never closes during this test")

    async with running("memory", [patient], grace=0.2) as runner:
        for i in range(3):
            await publish(runner, "orders", str(i))
        await wait_until(lambda: runner.stats.handlers["patient"].received == 3)
    stats = runner.stats.handlers["patient"]
    assert (stats.abandoned, stats.handled, stats.received) == (3, 0, 3)


async def test_a_recoverable_channel_batches_what_it_recovers_in_publish_order() -> None:
    orders = Channel("orders", history=100)
    batches: list[list[bytes]] = []

    @on(orders, batch=Batch(max_size=3, max_wait=0.1))
    async def collect(msgs: list[Message], ctx: Context) -> None:
        batches.append([m.data for m in msgs])

    async with TestBus([collect]) as bus:
        await bus.publish(orders, b"1")
        async with bus.gap():  # missed, then read back from the history
            for i in range(2, 6):
                await bus.publish(orders, str(i).encode())
        await bus.publish(orders, b"6")
        await bus.drain()
    assert batches == [[b"1", b"2", b"3"], [b"4", b"5", b"6"]]
    assert bus.runner.stats.channels["orders"].recovered == 4
