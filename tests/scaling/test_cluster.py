"""What is particular to a real three-master Redis Cluster: its URL form, sharded subscriptions
that follow a slot migration. Plain, pattern and sharded delivery, streams and a node restart are
checked on a cluster with every other transport by tests/backends/test_conformance.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.crc import key_slot

from eventbus import ConfigError, Context, Message, Runner, connect, on, on_pattern
from eventbus._backends.cluster import parse_cluster_url
from tests.scaling.local_cluster import LocalCluster

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


async def test_sharded_subscription_follows_a_slot_migration(redis_cluster: LocalCluster) -> None:
    received: dict[str, list[Any]] = {"plain": [], "pattern": [], "sharded": []}
    channel = SHARDED[0]
    slot = key_slot(channel.encode())
    async with Runner(make_handlers(received), url=redis_cluster.url) as runner, connect(redis_cluster.url) as bus:
        # The channels hash to slots on all three masters: one connection per master.
        assert len({key_slot(c.encode()) // 5462 for c in SHARDED}) == 3
        assert len(sharded_subscriber(runner).nodes) == 3
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


async def test_recoverable_channels_on_a_cluster(redis_cluster: LocalCluster) -> None:
    """The history's keys share the channel's slot: the publish script runs on the node owning
    it, SPUBLISH included, and a gap (an offset jump here) is read back from there."""
    from eventbus import Channel
    from tests.fault.helpers import eventually
    from tests.histories import append_unpublished_async

    plain, sharded = Channel("rec-plain", history=100), Channel("rec-sharded", history=100, sharded=True)
    seen: dict[str, list[int]] = {"rec-plain": [], "rec-sharded": []}

    @on(plain, sharded)
    async def record(msg: Message, ctx: Context) -> None:
        seen[msg.channel].append(int(msg.text))

    async with Runner([record], url=redis_cluster.url, embedded=False) as runner:
        assert runner.publisher is not None
        for channel in (plain, sharded):
            await runner.publisher.publish(channel, 1)
            # A message that never arrived: in the history, not published.
            assert await append_unpublished_async(runner.redis, channel.name, b"2") == 2
            await runner.publisher.publish(channel, 3)
        await eventually(lambda: all(len(v) == 3 for v in seen.values()), what="three messages on each channel")
    assert seen == {"rec-plain": [1, 2, 3], "rec-sharded": [1, 2, 3]}
    assert runner.stats.channels["rec-plain"].recovered == 1
    assert runner.stats.channels["rec-sharded"].recovered == 1
