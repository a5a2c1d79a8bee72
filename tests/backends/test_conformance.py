"""What every transport must do alike, run on each: memory, one redis-server, a cluster, Sentinel.

One suite, as Watermill's universal Pub/Sub tests are: a :class:`TransportCase` names what it
supports (:class:`Features`), and a test that needs what a transport lacks is skipped there. The
in-memory transport is held to the same tests as the servers: it is what users' unit tests
(``eventbus.testing``) run on, so it must behave like Redis. The cluster and the Sentinel set-up
are started once per session (tests/conftest.py).

Adding a transport: give it a :class:`TransportCase` in :func:`transport` and run this file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from redis.crc import key_slot

from eventbus import (
    Context,
    Message,
    NoResponderError,
    RemoteError,
    Runner,
    StreamMessage,
    on,
    on_pattern,
    on_stream,
)
from eventbus._backends.memory import MemoryBroker
from eventbus._glob import glob_match
from eventbus._names import decode_name, encode_name
from tests.fault.helpers import FAST, eventually
from tests.redis_server import RedisServer, SentinelProcess
from tests.scaling.local_cluster import LocalCluster


@dataclass(frozen=True)
class Features:
    """What a transport supports, for the tests that need it."""

    # PUBLISH returns the number of receivers. A cluster node counts only its own clients.
    counts_receivers: bool = True
    sharded: bool = True  # @on(..., sharded=True): SSUBSCRIBE / SPUBLISH
    streams: bool = True  # @on_stream: consumer groups
    # The server can be killed and started again under a running runner.
    restart: bool = True


@dataclass(frozen=True)
class TransportCase:
    name: str
    url: str | None  # None: the in-memory broker
    features: Features
    # Kills the server a running runner's pub/sub subscription is on, and starts it again.
    restart: Callable[[Runner], None] | None = None

    @asynccontextmanager
    async def running(self, handlers: Any, **options: Any) -> AsyncIterator[Runner]:
        options = {**FAST, **options}
        if self.url is None:
            runner = Runner(handlers, broker=MemoryBroker(), **options)
        else:
            runner = Runner(handlers, url=self.url, **options)
        async with runner:
            yield runner


def _restart_cluster_node(cluster: LocalCluster) -> Callable[[Runner], None]:
    def restart(runner: Runner) -> None:
        port = runner.subscriber.params["port"]  # type: ignore[union-attr]
        node = next(n for n in cluster.nodes if n.port == port)
        node.kill()
        node.start()
        cluster.wait_ok()

    return restart


@pytest.fixture(params=["memory", "redis", "cluster", "sentinel"])
def transport(request: pytest.FixtureRequest) -> TransportCase:
    if request.param == "memory":
        return TransportCase("memory", None, Features(restart=False))
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return TransportCase("redis", server.url, Features(), lambda runner: server.restart())
    if request.param == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return TransportCase("cluster", cluster.url, Features(counts_receivers=False), _restart_cluster_node(cluster))
    master, sentinel = request.getfixturevalue("redis_sentinel")
    assert isinstance(sentinel, SentinelProcess)
    return TransportCase("sentinel", sentinel.url, Features(), lambda runner: master.restart())


def needs(transport: TransportCase, feature: str) -> None:
    if not getattr(transport.features, feature):
        pytest.skip(f"the {transport.name} transport has no {feature}")


async def publish(runner: Runner, channel: str, data: Any, *, sharded: bool = False) -> int:
    assert runner.publisher is not None
    return await runner.publisher.publish(channel, data, sharded=sharded)


class Received:
    """What the handlers got, and a marker channel to tell that nothing more is on its way."""

    MARKER = "conformance:marker"

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._markers: list[bytes] = []

        @on(self.MARKER)
        async def marker(msg: Message, ctx: Context) -> None:
            self._markers.append(msg.data)

        self.marker = marker

    def add(self, item: Any) -> None:
        self.items.append(item)

    async def settled(self, runner: Runner, count: int) -> list[Any]:
        """Wait for ``count`` items, then for a marker published after them, then for the handlers:
        whatever else was published before (what should not have been delivered) has arrived by
        then, as a server delivers one client's publishes to one connection in order. (On a
        cluster each publish may take another node, so there it is a weaker check.)"""
        await eventually(lambda: len(self.items) >= count, what=f"{count} deliveries")
        token = str(len(self._markers)).encode()
        await publish(runner, self.MARKER, token)
        await eventually(lambda: token in self._markers, what="the marker")
        assert await runner.drain(10)
        return self.items


async def test_channels_and_patterns_are_delivered_as_redis_does(transport: TransportCase) -> None:
    # One subscription connection: a message matching a channel and two patterns is received three
    # times, once per subscription (that is Redis's semantics, kept).
    got = Received()

    @on("orders:Opening Ceremony")
    async def exact(msg: Message, ctx: Context) -> None:
        got.add(("exact", msg.channel, msg.pattern, msg.data))

    @on_pattern("orders:* Ceremony")
    async def ceremonies(msg: Message, ctx: Context) -> None:
        got.add(("pattern", msg.channel, msg.pattern, msg.data))

    @on("orders:Opening Ceremony")
    @on_pattern("orders:*")
    async def both(msg: Message, ctx: Context) -> None:
        got.add(("both", msg.channel, msg.pattern, msg.data))

    async with transport.running([exact, ceremonies, both, got.marker]) as runner:
        counts = [
            await publish(runner, "orders:Opening Ceremony", "1"),
            await publish(runner, "orders:Womens Judo", "2"),
            await publish(runner, "unrelated", "3"),
        ]
        if transport.features.counts_receivers:
            assert counts == [3, 1, 0]
        items = await got.settled(runner, 5)
    assert sorted(items, key=repr) == sorted(
        [
            ("exact", "orders:Opening Ceremony", None, b"1"),
            ("both", "orders:Opening Ceremony", None, b"1"),
            ("pattern", "orders:Opening Ceremony", "orders:* Ceremony", b"1"),
            ("both", "orders:Opening Ceremony", "orders:*", b"1"),
            ("both", "orders:Womens Judo", "orders:*", b"2"),
        ],
        key=repr,
    )


# Patterns and channels where Redis's glob differs from fnmatch's: escapes, negation, reversed
# ranges, an unclosed bracket, and bytes above 0x7f (compared as signed chars). The expectations
# come from eventbus._glob, which tests/backends/test_glob.py checks against the server's
# own KEYS over hundreds of generated pairs; here every transport must route by the same rules.
GLOB_PATTERNS = [
    b"h?llo", b"h[ae]llo", b"h[^e]llo", b"h[b-a]llo", b"h\\*llo", b"[abc", b"*llo",
    b"[a-\xff]", b"[\x80-\xff]x", b"\xc3*", b"?\xa9", "caf[é]".encode(),
]  # fmt: skip
GLOB_CHANNELS = [
    b"hello", b"hallo", b"hbllo", b"h*llo", b"a", b"c", b"\xc3", b"\x80x", b"\xc3\xa9", b"z",
    "café".encode(), b"\xffx",
]  # fmt: skip


async def test_patterns_follow_redis_glob_rules(transport: TransportCase) -> None:
    got = Received()

    @on_pattern(*(decode_name(p) for p in GLOB_PATTERNS))
    async def globs(msg: Message, ctx: Context) -> None:
        assert msg.pattern is not None
        got.add((encode_name(msg.pattern), encode_name(msg.channel)))

    expected = {(p, c) for p in GLOB_PATTERNS for c in GLOB_CHANNELS if glob_match(p, c)}
    async with transport.running([globs, got.marker]) as runner:
        for channel in GLOB_CHANNELS:
            await publish(runner, decode_name(channel), "m")
        items = await got.settled(runner, len(expected))
    assert len(items) == len(expected)
    assert set(items) == expected


async def test_channel_names_and_payloads_are_binary_safe(transport: TransportCase) -> None:
    got = Received()
    odd = decode_name(b"orders:\xff\xfe caf\xc3\xa9")  # not UTF-8: kept as surrogates, sent as bytes

    @on(odd)
    async def exact(msg: Message, ctx: Context) -> None:
        got.add(("channel", encode_name(msg.channel), msg.data))

    @on_pattern(decode_name(b"orders:\xff*"))
    async def pattern(msg: Message, ctx: Context) -> None:
        got.add(("pattern", encode_name(msg.channel), msg.data))

    payloads = [bytes(range(256)), b"", b"\x00\r\n\x00", "é".encode("latin-1")]
    async with transport.running([exact, pattern, got.marker]) as runner:
        for payload in payloads:
            await publish(runner, odd, payload)
        items = await got.settled(runner, 2 * len(payloads))
    raw = b"orders:\xff\xfe caf\xc3\xa9"
    assert [i for i in items if i[0] == "channel"] == [("channel", raw, p) for p in payloads]
    assert [i for i in items if i[0] == "pattern"] == [("pattern", raw, p) for p in payloads]


async def test_ctx_redis_is_the_server_the_messages_come_from(transport: TransportCase) -> None:
    got = Received()

    @on("count")
    async def count(msg: Message, ctx: Context) -> None:
        await ctx.redis.incr("conformance:count")
        await ctx.publish("counted", msg.data)

    @on("counted")
    async def counted(msg: Message, ctx: Context) -> None:
        got.add(msg.data)

    async with transport.running([count, counted, got.marker]) as runner:
        for i in range(3):
            await publish(runner, "count", i)
        await eventually(lambda: len(got.items) == 3, what="the messages published by the handler")
        assert got.items == [b"0", b"1", b"2"]
        assert await runner.redis.get("conformance:count") == b"3"


# Channels whose slots are spread over every master of a three-node cluster.
SHARDED = [f"shard-{i}" for i in range(24)]


async def test_sharded_channels_are_a_namespace_of_their_own(transport: TransportCase) -> None:
    needs(transport, "sharded")
    got = Received()

    @on(*SHARDED, sharded=True)
    async def sharded(msg: Message, ctx: Context) -> None:
        got.add(("sharded", msg.channel, msg.text))

    @on(SHARDED[0])
    async def plain(msg: Message, ctx: Context) -> None:
        got.add(("plain", msg.channel, msg.text))

    assert len({key_slot(c.encode()) // 5462 for c in SHARDED}) == 3
    async with transport.running([sharded, plain, got.marker]) as runner:
        # As on a real server: SPUBLISH reaches SSUBSCRIBE only (counted exactly, on the node that
        # owns the slot), PUBLISH reaches SUBSCRIBE only.
        for channel in SHARDED:
            assert await publish(runner, channel, "spublished", sharded=True) == 1
        await runner.redis.spublish(SHARDED[1], "from ctx.redis")
        count = await publish(runner, SHARDED[0], "published")
        if transport.features.counts_receivers:
            assert count == 1
        await got.settled(runner, len(SHARDED) + 2)
    assert sorted(got.items) == sorted(
        [("sharded", c, "spublished") for c in SHARDED]
        + [("sharded", SHARDED[1], "from ctx.redis"), ("plain", SHARDED[0], "published")]
    )


async def test_stream_entries_are_handled_then_acknowledged(transport: TransportCase) -> None:
    needs(transport, "streams")
    got: list[str] = []

    # Two streams: on a cluster their keys live on different masters.
    @on_stream("orders-a", "orders-b", group="g", block=0.2)
    async def handle(msg: StreamMessage, ctx: Context) -> None:
        got.append(f"{msg.stream}:{msg.text}")

    async with transport.running([handle]) as runner:
        assert runner.publisher is not None
        assert key_slot(b"orders-a") // 5462 != key_slot(b"orders-b") // 5462
        for i in range(20):
            await runner.publisher.append("orders-a", i)
            await runner.publisher.append("orders-b", i)
        await eventually(lambda: len(got) == 40, what="every entry")
        redis = runner.redis

        async def all_acknowledged() -> bool:  # in batches, shortly after each handler returns
            return [(await redis.xpending(s, "g"))["pending"] for s in ("orders-a", "orders-b")] == [0, 0]

        await eventually(all_acknowledged, what="the acknowledgements")
    assert sorted(got) == sorted([f"orders-a:{i}" for i in range(20)] + [f"orders-b:{i}" for i in range(20)])


@pytest.mark.fault
async def test_subscriptions_come_back_after_the_server_restarts(transport: TransportCase) -> None:
    needs(transport, "restart")
    plain: list[str] = []
    sharded: list[str] = []

    @on("plain")
    async def on_plain(msg: Message, ctx: Context) -> None:
        plain.append(msg.text)

    @on(*SHARDED, sharded=True)
    async def on_sharded(msg: Message, ctx: Context) -> None:
        sharded.append(msg.text)

    handlers = [on_plain, on_sharded] if transport.features.sharded else [on_plain]
    async with transport.running(handlers) as runner:
        await publish_until(runner, "plain", plain, "before")
        assert transport.restart is not None
        await asyncio.to_thread(transport.restart, runner)
        # Pub/sub is at-most-once: what is published during the gap is lost, so publish until the
        # resubscribed runner hears it.
        await publish_until(runner, "plain", plain, "after")
        if transport.features.sharded:
            for channel in SHARDED:
                await publish_until(runner, channel, sharded, f"after:{channel}", sharded=True)
        assert runner.stats.reconnects >= 1


async def publish_until(runner: Runner, channel: str, received: list[str], text: str, *, sharded: bool = False) -> None:
    """Publish ``text`` again until it arrives: while a subscription is being restored, what is
    published is lost (or refused, while the server or the slot's owner is not back)."""
    for _ in range(200):
        with contextlib.suppress(Exception):
            await publish(runner, channel, text, sharded=sharded)
        with contextlib.suppress(AssertionError):
            await eventually(lambda: text in received, timeout=0.1, what=text)
            return
    raise AssertionError(f"{text!r} never arrived on {channel!r}")


async def test_requests_are_answered_by_the_handlers_return_value(transport: TransportCase) -> None:
    # Request/reply rides the pub/sub subscription: the request on the channel (or a sharded one),
    # the reply on the requester's reply channel, on every transport alike.
    @on("rpc:upper")
    async def upper(msg: Message, ctx: Context) -> bytes:
        return msg.data.upper()

    @on_pattern("rpc:count:*")
    async def count(msg: Message, ctx: Context) -> dict[str, Any]:
        return {"channel": msg.channel, "n": len(msg.data)}

    @on("rpc:fail")
    async def fail(msg: Message, ctx: Context) -> None:
        raise LookupError("no such rate")

    @on(*SHARDED[:6], sharded=True)
    async def sharded(msg: Message, ctx: Context) -> str:
        return f"{msg.channel}={msg.text}"

    handlers = [upper, count, fail, sharded] if transport.features.sharded else [upper, count, fail]
    async with transport.running(handlers) as runner:
        bus = runner.publisher
        assert bus is not None
        reply = await bus.request("rpc:upper", b"abc", timeout=10)
        assert reply.data == b"ABC" and reply.channel == "rpc:upper"
        assert await bus.request("rpc:count:x", "hello", timeout=10, reply_type=dict) == {
            "channel": "rpc:count:x",
            "n": 5,
        }
        with pytest.raises(RemoteError) as failed:
            await bus.request("rpc:fail", "", timeout=10)
        assert (failed.value.type_name, failed.value.remote_message) == ("LookupError", "no such rate")
        if transport.features.sharded:
            for channel in SHARDED[:6]:
                answer = await bus.request(channel, "q", timeout=10, sharded=True, reply_type=str)
                assert answer == f"{channel}=q"
        if transport.features.counts_receivers:
            with pytest.raises(NoResponderError):
                await bus.request("rpc:nobody", "", timeout=10)
        replies = await bus.request_all("rpc:upper", b"x", timeout=10, expected=1)
        assert [r.data for r in replies] == [b"X"]
        assert runner.stats.requests.late_replies == 0
