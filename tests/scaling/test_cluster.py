"""Plain and sharded pub/sub, streams and publishing on a real three-master Redis Cluster."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.crc import key_slot

from eventbus import ConfigError, Context, Message, Runner, StreamMessage, connect, on, on_pattern, on_stream
from eventbus._backends.cluster import parse_cluster_url
from tests.redis_server import RedisServer
from tests.scaling.local_cluster import LocalCluster
from tests.test_streams import wait_for

SHARDED = [f"shard-{i}" for i in range(24)]


def make_handlers(received: dict[str, list[Any]]) -> list[Any]:
    @on("plain")
    async def plain(msg: Message, ctx: Context) -> None:
        received["plain"].append(msg.text)

    @on_pattern("pat:*")
    async def pattern(msg: Message, ctx: Context) -> None:
        received["pattern"].append(msg.channel)

    @on(*SHARDED, sharded=True)
    async def sharded(msg: Message, ctx: Context) -> None:
        received["sharded"].append((msg.channel, msg.text))

    return [plain, pattern, sharded]


def sharded_subscriber(runner: Runner) -> Any:
    assert runner.sharded is not None
    return runner.sharded


async def publish_until(bus: Any, channel: str, received: list[Any], item: Any, *, sharded: bool = True) -> None:
    """Pub/sub is at-most-once: while a subscription moves, publish again until one arrives."""
    for _ in range(300):
        await bus.publish(channel, item[1] if isinstance(item, tuple) else item, sharded=sharded)
        await asyncio.sleep(0.05)
        if item in received:
            return
    raise TimeoutError(f"{item!r} never arrived on {channel!r}")


def test_cluster_url_form() -> None:
    parsed = parse_cluster_url("redis+cluster://u:p%40ss@10.0.0.1:7000,10.0.0.2:7001")
    assert parsed.seeds == (("10.0.0.1", 7000), ("10.0.0.2", 7001))
    assert parsed.node_url("10.0.0.3", 7002) == "redis://u:p%40ss@10.0.0.3:7002/0"
    with pytest.raises(ConfigError, match="a cluster has no database number"):
        parse_cluster_url("redis+cluster://host:7000/3")
    with pytest.raises(ConfigError, match="invalid seed 'host:notaport'"):
        parse_cluster_url("redis+cluster://host:notaport")


async def test_plain_patterns_and_sharded_on_a_cluster(redis_cluster: LocalCluster) -> None:
    received: dict[str, list[Any]] = {"plain": [], "pattern": [], "sharded": []}
    async with Runner(make_handlers(received), url=redis_cluster.url) as runner, connect(redis_cluster.url) as bus:
        # The channels hash to slots on all three masters; one connection per master.
        assert len({key_slot(c.encode()) // 5462 for c in SHARDED}) == 3
        assert len(sharded_subscriber(runner).nodes) == 3
        # (PUBLISH's count on a cluster covers only the node that took the command: not asserted.)
        await bus.publish("plain", "p1")
        await bus.publish("pat:x", "p2")
        for channel in SHARDED:
            assert await bus.publish(channel, f"to {channel}", sharded=True) == 1
        await wait_for(lambda: len(received["sharded"]) == len(SHARDED) and received["plain"] and received["pattern"])
        # Sharded and plain channels are separate namespaces, as in Redis.
        await bus.publish(SHARDED[0], "not sharded")
        await asyncio.sleep(0.2)
    assert received["plain"] == ["p1"] and received["pattern"] == ["pat:x"]
    assert sorted(received["sharded"]) == sorted((c, f"to {c}") for c in SHARDED)


async def test_sharded_subscription_follows_a_slot_migration(redis_cluster: LocalCluster) -> None:
    received: dict[str, list[Any]] = {"plain": [], "pattern": [], "sharded": []}
    channel = SHARDED[0]
    slot = key_slot(channel.encode())
    async with Runner(make_handlers(received), url=redis_cluster.url) as runner, connect(redis_cluster.url) as bus:
        await publish_until(bus, channel, received["sharded"], (channel, "before"))
        source = redis_cluster.owner_of(slot)
        target = next(n for n in redis_cluster.nodes if n is not source)
        await asyncio.to_thread(redis_cluster.move_slot, slot, target)
        await publish_until(bus, channel, received["sharded"], (channel, "after"))
        subscriber = sharded_subscriber(runner)
        owner = next(url for url, node in subscriber.nodes.items() if channel in node.channels)
        assert f":{target.port}/" in owner
        # The channels that did not move still arrive.
        await publish_until(bus, SHARDED[1], received["sharded"], (SHARDED[1], "others"))


@pytest.mark.fault
async def test_plain_and_sharded_survive_a_node_restart(redis_cluster: LocalCluster) -> None:
    received: dict[str, list[Any]] = {"plain": [], "pattern": [], "sharded": []}
    async with (
        Runner(make_handlers(received), url=redis_cluster.url, ping_interval=0.5, ping_timeout=0.5) as runner,
        connect(redis_cluster.url) as bus,
    ):
        # Kill the node that holds both the plain subscription and some sharded channels.
        plain_port = runner.subscriber.params["port"]  # type: ignore[union-attr]
        node: RedisServer = next(n for n in redis_cluster.nodes if n.port == plain_port)
        channel = next(c for c in SHARDED if redis_cluster.owner_of(key_slot(c.encode())) is node)
        await publish_until(bus, channel, received["sharded"], (channel, "before"))
        node.kill()
        await asyncio.sleep(0.3)
        await asyncio.to_thread(node.start)
        await asyncio.to_thread(redis_cluster.wait_ok)
        await publish_until(bus, channel, received["sharded"], (channel, "after"))
        await publish_until(bus, "plain", received["plain"], "after", sharded=False)
        assert runner.stats.reconnects >= 1


async def test_streams_on_a_cluster(redis_cluster: LocalCluster) -> None:
    got: list[str] = []

    # Two streams whose keys live on different masters.
    @on_stream("orders-a", "orders-b", group="g", block=0.2)
    async def handle(msg: StreamMessage, ctx: Context) -> None:
        got.append(f"{msg.stream}:{msg.text}")

    async with Runner([handle], url=redis_cluster.url), connect(redis_cluster.url) as bus:
        for i in range(20):
            await bus.append("orders-a", i)
            await bus.append("orders-b", i)
        await wait_for(lambda: len(got) == 40)
    assert sorted(got) == sorted([f"orders-a:{i}" for i in range(20)] + [f"orders-b:{i}" for i in range(20)])


async def test_sharded_channels_on_a_standalone_server(redis_server: RedisServer) -> None:
    received: dict[str, list[Any]] = {"plain": [], "pattern": [], "sharded": []}
    async with Runner(make_handlers(received), url=redis_server.url), connect(redis_server.url) as bus:
        for channel in SHARDED[:3]:
            assert await bus.publish(channel, "s", sharded=True) == 1
        assert await bus.publish(SHARDED[0], "plain publish") == 0
        await wait_for(lambda: len(received["sharded"]) == 3)
