"""Flow control with default settings: inboxes bounded by memory, shedding that is counted, and
``overflow="pause"`` handing the backlog back to Redis.

The bursts go through a real redis-server with its default ``client-output-buffer-limit``:
whatever a ``listen()`` loop would survive, eventbus must deliver whole with default options.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import pytest

from eventbus import Context, Message, on
from eventbus._subscription import DEFAULT_INBOX_BYTES, HandlerOptions
from eventbus._worker import MESSAGE_OVERHEAD
from tests.buses import running
from tests.fault.helpers import eventually
from tests.redis_server import RedisServer

PAYLOAD = b'{"order": 0, "who": "Jim", "event": "Opening Ceremony", "q": 1}'[:60].ljust(60)


def publish_backlog(server: RedisServer, channel: str, count: int, payload: bytes = PAYLOAD) -> None:
    """Pipelined PUBLISHes, 1,000 per round trip, each payload prefixed with its sequence number."""
    with server.client() as client:
        for start in range(0, count, 1000):
            pipe = client.pipeline(transaction=False)
            for i in range(start, min(start + 1000, count)):
                pipe.publish(channel, b"%07d" % i + payload[7:])
            pipe.execute()


@pytest.mark.slow
async def test_a_200k_burst_to_a_default_handler_arrives_whole_and_in_order(redis_server: RedisServer) -> None:
    """The issue's scenario: a busy handler with default options, 200,000 x 60 bytes behind it."""
    count = 200_000
    busy = asyncio.Event()
    seen: list[int] = []

    @on("bench")
    async def handler(msg: Message, ctx: Context) -> None:
        if not seen:
            await busy.wait()  # busy while the whole backlog arrives
        seen.append(int(msg.data[:7]))

    async with running("redis", [handler], redis_server.url) as runner:
        await asyncio.to_thread(publish_backlog, redis_server, "bench", count)
        # Everything is read off the socket (and so off Redis's output buffer) while the handler waits.
        await eventually(lambda: runner.stats.messages == count, timeout=60, what="the reader to take the backlog")
        worker = runner.workers[0]
        assert worker.queued_bytes <= DEFAULT_INBOX_BYTES
        busy.set()
        await eventually(lambda: len(seen) == count, timeout=60, what="every message handled")
        stats = runner.stats.handlers["handler"]
        assert (stats.received, stats.handled, stats.dropped) == (count, count, 0)
        assert runner.stats.reconnects == 0
        assert worker.queued_bytes == 0
    assert seen == list(range(count))


async def test_the_budget_counts_payload_bytes_and_sheds_by_policy(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A small budget fills by size, not count: big messages take more of it; drops are exact and logged."""
    caplog.set_level(logging.WARNING, "eventbus")
    release = asyncio.Event()
    budget = 10 * (1000 + MESSAGE_OVERHEAD)  # ten 1,000-byte messages
    seen: dict[str, list[int]] = {"newest": [], "oldest": [], "fast": []}

    def make(name: str, overflow: str) -> Callable[[Message, Context], object]:
        @on("sized", name=name, inbox_bytes=budget, overflow=overflow)
        async def slow(msg: Message, ctx: Context) -> None:
            seen[name].append(int(msg.data[:4]))
            await release.wait()

        return slow

    @on("sized", name="fast")
    async def fast(msg: Message, ctx: Context) -> None:
        seen["fast"].append(int(msg.data[:4]))

    async with running(
        "redis", [make("newest", "drop_newest"), make("oldest", "drop_oldest"), fast], redis_server.url
    ) as runner:
        with redis_server.client() as client:
            client.publish("sized", b"0000" + b"x" * 996)
            await eventually(lambda: seen["newest"] and seen["oldest"], what="the first message in flight")
            for i in range(1, 31):
                client.publish("sized", b"%04d" % i + b"x" * 996)
        await eventually(lambda: len(seen["fast"]) == 31, what="the fast handler")
        by_name = {w.name: w for w in runner.workers}
        for name in ("newest", "oldest"):
            assert len(by_name[name].inbox) == 10, name
            assert by_name[name].queued_bytes <= budget
        release.set()
        assert await runner.drain(10)
        for name in ("newest", "oldest"):
            stats = runner.stats.handlers[name]
            assert (stats.received, stats.handled, stats.dropped) == (31, 11, 20), name
        assert runner.stats.handlers["fast"].dropped == 0
    assert seen["newest"] == list(range(11))
    assert seen["oldest"] == [0, *range(21, 31)]
    assert "inbox of handler newest is full" in caplog.text and "policy drop_newest" in caplog.text


async def test_inbox_size_is_an_optional_extra_cap(redis_server: RedisServer) -> None:
    release = asyncio.Event()
    seen: list[int] = []

    @on("capped", inbox_size=5)
    async def capped(msg: Message, ctx: Context) -> None:
        seen.append(int(msg.text))
        await release.wait()

    async with running("redis", [capped], redis_server.url) as runner:
        with redis_server.client() as client:
            client.publish("capped", 0)
            await eventually(lambda: seen, what="the first message in flight")
            for i in range(1, 20):
                client.publish("capped", i)
        await eventually(lambda: runner.stats.messages == 20, what="every message read")
        release.set()
        assert await runner.drain(10)
        stats = runner.stats.handlers["capped"]
        assert (stats.handled, stats.dropped) == (6, 14)


def test_default_options_are_bounded_by_memory_only() -> None:
    options = HandlerOptions()
    assert options.inbox_bytes == DEFAULT_INBOX_BYTES == 128 * 1024 * 1024
    assert options.inbox_size is None
    assert options.overflow == "drop_newest"


# -- overflow="pause" ----------------------------------------------------------------------------


async def _client_omem(server: RedisServer) -> int:
    with server.client() as admin:
        return max((int(c["omem"]) for c in admin.client_list() if c["name"].startswith("eventbus-sub")), default=0)


@pytest.mark.fault
@pytest.mark.both_loops
async def test_pause_stops_reading_so_redis_buffers_and_nothing_is_dropped(own_redis_server: RedisServer) -> None:
    release = asyncio.Event()
    budget = 20 * (1000 + MESSAGE_OVERHEAD)
    paused_seen: list[int] = []
    other_seen: list[int] = []

    @on("work", inbox_bytes=budget, overflow="pause")
    async def paced(msg: Message, ctx: Context) -> None:
        if not paused_seen:
            await release.wait()
        paused_seen.append(int(msg.data[:7]))

    @on("other")
    async def other(msg: Message, ctx: Context) -> None:
        other_seen.append(int(msg.text))

    # 20 MB: more than the kernel's socket buffers hold, less than Redis's 32 MB default limit.
    count = 20_000
    async with running("redis", [paced, other], own_redis_server.url) as runner:
        await asyncio.to_thread(publish_backlog, own_redis_server, "work", count, b"y" * 1000)
        await eventually(lambda: runner.read_gate.paused, what="reading paused")
        # Redis holds the rest in our output buffer: nothing was read past the budget, nothing dropped.
        await eventually(lambda: runner.stats.messages < count, what="a backlog left in Redis")
        assert await _client_omem(own_redis_server) > 0
        with own_redis_server.client() as client:
            client.publish("other", 1)
        await asyncio.sleep(0.3)  # waits for something NOT to happen: "other" must not be read
        assert other_seen == []  # the documented price: every handler on the connection waits
        release.set()
        await eventually(lambda: len(paused_seen) == count, timeout=30, what="the whole backlog handled")
        await eventually(lambda: other_seen == [1], what="the other handler served after the pause")
        assert not runner.read_gate.paused
        assert runner.read_gate.pauses >= 1
        stats = runner.stats.handlers["paced"]
        assert (stats.handled, stats.dropped) == (count, 0)
        assert runner.stats.reconnects == 0
    assert paused_seen == list(range(count))


@pytest.mark.fault
@pytest.mark.both_loops
async def test_pause_past_the_server_buffer_limit_is_a_logged_gap(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis drops a paused subscriber whose output buffer passes the limit: reconnect, gap, go on."""
    caplog.set_level(logging.INFO, "eventbus")
    release = asyncio.Event()
    seen: list[int] = []

    @on("flood", inbox_bytes=50_000, overflow="pause")
    async def stuck(msg: Message, ctx: Context) -> None:
        if msg.data.startswith(b"after"):
            seen.append(-1)
            return
        await release.wait()
        seen.append(int(msg.data[:7]))

    with own_redis_server.client() as admin:
        admin.config_set("client-output-buffer-limit", "pubsub 256kb 0 0")
    async with running("redis", [stuck], own_redis_server.url, ping_interval=0.2) as runner:
        # 20 MB: past the kernel's socket buffers and the 256 kB limit while nobody reads.
        await asyncio.to_thread(publish_backlog, own_redis_server, "flood", 20_000, b"z" * 1000)
        await eventually(lambda: runner.stats.reconnects >= 1, timeout=30, what="Redis to drop the paused connection")
        release.set()
        assert await runner.drain(20)
        await eventually(lambda: not runner.read_gate.paused, what="reading resumed")
        with own_redis_server.client() as client:
            await eventually(lambda: client.publish("flood", b"after the gap") == 1, what="resubscribed")
        await eventually(lambda: seen and seen[-1] == -1, what="a message after the gap")
        stats = runner.stats.handlers["stuck"]
        assert stats.dropped == 0
        assert runner.stats.gap_seconds > 0
        assert runner.stats.output_buffer_closes >= 1  # named and counted as the output-buffer limit
    assert "reading paused" in caplog.text
    assert "while reading was paused: most likely its client-output-buffer-limit pubsub" in caplog.text
    assert "reconnected to" in caplog.text and "after a gap of" in caplog.text


async def test_pause_on_the_memory_broker_holds_messages_like_redis() -> None:
    """TestBus behaves like Redis: while paused, published messages wait, and all arrive in order."""
    release = asyncio.Event()
    seen: list[int] = []

    @on("work", inbox_bytes=5 * (10 + MESSAGE_OVERHEAD), overflow="pause")
    async def paced(msg: Message, ctx: Context) -> None:
        if not seen:
            await release.wait()
        seen.append(int(msg.text))

    async with running("memory", [paced]) as runner:
        assert runner.publisher is not None
        for i in range(100):
            await runner.publisher.publish("work", i)
        assert runner.read_gate.paused
        assert len(runner.workers[0].inbox) < 10
        release.set()
        await eventually(lambda: len(seen) == 100, what="every message")
        assert runner.stats.handlers["paced"].dropped == 0
    assert seen == list(range(100))


# -- the peak memory of a big burst ---------------------------------------------------------------

RSS_PROBE = """
import asyncio, sys, time
from eventbus import Runner, on

count = int(sys.argv[2])
busy = asyncio.Event()

@on("bench")
async def handler(msg, ctx):
    await busy.wait()  # busy until the whole backlog has been read

async def main():
    async with Runner([handler], url=sys.argv[1], grace=1) as runner:
        print("ready", flush=True)
        deadline = time.monotonic() + 120
        while runner.stats.messages < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        busy.set()
        await runner.drain(120)
        stats = runner.stats.handlers["handler"]
        with open("/proc/self/status") as status:
            hwm = next(line for line in status if line.startswith("VmHWM")).split()[1]
        print("result", runner.stats.messages, stats.handled, stats.dropped, runner.stats.reconnects, hwm, flush=True)

asyncio.run(main())
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads VmHWM from /proc")
async def test_a_million_message_burst_stays_under_the_documented_rss_bound(
    redis_server: RedisServer, subprocess_env: dict[str, str]
) -> None:
    """1,000,000 x 60 bytes to a busy default handler: shed as documented, peak RSS under 400 MiB."""
    count = 1_000_000
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        RSS_PROBE,
        redis_server.url,
        str(count),
        stdout=asyncio.subprocess.PIPE,
        env=subprocess_env,
    )
    assert process.stdout is not None
    assert (await asyncio.wait_for(process.stdout.readline(), 30)).startswith(b"ready")
    await asyncio.to_thread(publish_backlog, redis_server, "bench", count)
    line = await asyncio.wait_for(process.stdout.readline(), 180)
    await process.wait()
    messages, handled, dropped, reconnects, hwm_kib = map(int, line.split()[1:])
    assert reconnects == 0
    assert messages == count
    assert handled + dropped == count
    # 160 accounted bytes per message: a 128 MiB budget holds ~840,000 of them; the rest is shed.
    assert handled >= DEFAULT_INBOX_BYTES // (60 + MESSAGE_OVERHEAD)
    assert hwm_kib < 400 * 1024, f"peak RSS {hwm_kib / 1024:.0f} MiB"
