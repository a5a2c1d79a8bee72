"""A handler far slower than the publish rate: the shared connection survives, drops are exact.

Redis disconnects a subscriber whose output buffer passes ``client-output-buffer-limit pubsub``.
The test sets a tiny limit and proves it bites (a raw subscriber that does not read is dropped),
then shows that eventbus, reading eagerly into bounded inboxes, is not dropped: the fast handler
gets every message in order, and each slow handler's drops are exactly what its policy implies.
"""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from eventbus import Context, Message, on
from tests.fault.helpers import eventually, running
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.fault, pytest.mark.both_loops]

N = 30_000  # 30 MB of 1 KB messages: far more than the limit plus the kernel's socket buffers (~10 MB)
BATCH = 100  # a publisher round trip per 100 KB: an eager reader is never megabytes behind
INBOX = 100
PAYLOAD = b"x" * 1000


def publish_flood(server: RedisServer) -> None:
    with server.client() as client:
        for start in range(0, N, BATCH):
            pipe = client.pipeline(transaction=False)
            for i in range(start, start + BATCH):
                pipe.publish("flood", b"%06d" % i + PAYLOAD)
            pipe.execute()


def lazy_subscriber(port: int) -> socket.socket:
    """A subscriber that never reads: the control case for the output-buffer limit."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nflood\r\n")
    return sock


async def test_slow_handlers_do_not_get_the_connection_dropped(
    own_redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "eventbus")
    release = asyncio.Event()
    fast_seen: list[int] = []
    slow_seen: dict[str, list[int]] = {"newest": [], "oldest": []}

    @on("flood", name="fast")
    async def fast(msg: Message, ctx: Context) -> None:
        fast_seen.append(int(msg.data[:6]))

    @on("flood", name="slow_newest", inbox_size=INBOX, overflow="drop_newest")
    async def slow_newest(msg: Message, ctx: Context) -> None:
        slow_seen["newest"].append(int(msg.data[:6]))
        await release.wait()

    @on("flood", name="slow_oldest", inbox_size=INBOX, overflow="drop_oldest")
    async def slow_oldest(msg: Message, ctx: Context) -> None:
        slow_seen["oldest"].append(int(msg.data[:6]))
        await release.wait()

    with own_redis_server.client() as admin:
        # Far below the 32 MB default, yet with room for a reader that the scheduler pauses briefly.
        admin.config_set("client-output-buffer-limit", "pubsub 4mb 2mb 2")
    async with running([fast, slow_newest, slow_oldest], own_redis_server.url) as runner:
        control = lazy_subscriber(own_redis_server.port)
        try:
            with own_redis_server.client() as admin:
                await eventually(lambda: admin.pubsub_numsub("flood")[0][1] == 2, what="control subscribed")
                sub_id = next(c["id"] for c in admin.client_list() if c["name"].startswith("eventbus-sub"))
            await asyncio.to_thread(publish_flood, own_redis_server)
            await eventually(
                lambda: len(fast_seen) == N or runner.stats.reconnects > 0, what="the fast handler to see every message"
            )
            assert runner.stats.reconnects == 0, "Redis dropped the eventbus connection"
            with own_redis_server.client() as admin:
                # The limit is real: the subscriber that did not read was disconnected...
                await eventually(lambda: admin.pubsub_numsub("flood")[0][1] == 1, what="the control dropped")
                # ...and eventbus's connection is the same one, never dropped nor replaced.
                assert [c["id"] for c in admin.client_list() if c["name"].startswith("eventbus-sub")] == [sub_id]
        finally:
            control.close()
        assert fast_seen == list(range(N))
        # Memory stays bounded: each slow inbox is full, not growing.
        by_name = {w.name: w for w in runner.workers}
        assert len(by_name["slow_newest"].inbox) == INBOX
        assert len(by_name["slow_oldest"].inbox) == INBOX
        release.set()
        assert await runner.drain(20)
        stats = runner.stats
        assert stats.reconnects == 0
        # One message in flight, INBOX queued: everything else was dropped, and counted.
        for name in ("slow_newest", "slow_oldest"):
            s = stats.handlers[name]
            assert (s.received, s.handled, s.dropped) == (N, INBOX + 1, N - INBOX - 1), name
        # Which message the handler took before blocking depends on when its task first ran (the
        # reader may have queued many by then); what the policies keep around it does not.
        newest, oldest = slow_seen["newest"], slow_seen["oldest"]
        assert newest[:INBOX] == list(range(INBOX)) and newest[INBOX] >= INBOX  # drop_newest keeps the first
        assert oldest[1:] == list(range(N - INBOX, N)) and oldest[0] < N - INBOX  # drop_oldest keeps the latest
        assert stats.handlers["fast"].dropped == 0
    assert "inbox of handler slow_newest is full" in caplog.text
    assert "inbox of handler slow_oldest is full" in caplog.text
