"""Recoverable channels through a master failover on a real Redis Cluster (three masters, a replica
each): the master owning the channels' slot is SIGKILLed mid-stream while its replica lags behind,
the replica takes over, and publishing goes on (eventbus._history, eventbus._recovery)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from redis.crc import key_slot

from eventbus import Channel, Context, Message, Publisher, connect, on
from eventbus._history import history_keys
from tests.fault.helpers import eventually, running
from tests.scaling.local_cluster import LocalCluster

pytestmark = [pytest.mark.fault]

# (n, attempt): a publish that failed may still have run on the dying master, so its retry is
# another message; "returned" means the publish of that very attempt returned.
Sent = tuple[int, int]


def channels_in_one_slot(cluster: LocalCluster) -> tuple[Channel, Channel, str]:
    """A plain and a sharded recoverable channel whose histories share a slot, owned by a master
    other than the node the plain subscription connects to first: that connection outlives the
    kill and sees the failover only through the messages, the sharded one moves to the replica."""
    for i in range(100):
        tag = f"rec{i}"
        slot = key_slot(tag.encode())
        if cluster.owner_of(slot) is not cluster.nodes[0]:
            plain = Channel(f"{{{tag}}}plain", history=100_000)
            sharded = Channel(f"{{{tag}}}sharded", history=100_000, sharded=True)
            assert {key_slot(history_keys(c.name)[0].encode()) for c in (plain, sharded)} == {slot}
            return plain, sharded, tag
    raise LookupError("every tag hashed to the first node")


class SteadyPublisher:
    """About 1,000 messages/s, alternately on each channel; a publish that fails (the slot has no
    master for a while) is retried, as a producer would, until one returns."""

    def __init__(self, bus: Publisher, channels: tuple[Channel, ...]) -> None:
        self.bus = bus
        self.channels = channels
        self.returned: dict[str, list[Sent]] = {c.name: [] for c in channels}
        self.failed = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            for channel in self.channels:
                await self._publish(channel, n)
            if n % 5 == 0:
                await asyncio.sleep(0.01)

    async def _publish(self, channel: Channel, n: int) -> None:
        attempt = 0
        while True:
            try:
                await self.bus.publish(channel, f"{n}.{attempt}")
            except Exception:  # noqa: BLE001 - any Redis error while the slot fails over: retry
                self.failed += 1
                attempt += 1
                await asyncio.sleep(0.02)
                continue
            self.returned[channel.name].append((n, attempt))
            return

    def count(self) -> int:
        return len(self.returned[self.channels[0].name])


def not_recovered(caplog: pytest.LogCaptureFixture, channel: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "eventbus.recovery" and r.levelno == logging.WARNING and f"on {channel!r}" in r.getMessage()
    ]


async def test_a_master_killed_mid_stream_loses_nothing_unreported(
    replicated_cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    """The replica is held back while its master publishes (its copy lacks the newest entries),
    then the master is killed. Every message whose publish returned is delivered once, in order,
    except messages of the dead master's last moments reported as NOT recovered; everything
    published on the promoted replica is delivered."""
    caplog.set_level(logging.INFO, "eventbus")
    cluster = replicated_cluster
    plain, sharded, tag = channels_in_one_slot(cluster)
    slot = key_slot(tag.encode())
    seen: dict[str, list[Sent]] = {plain.name: [], sharded.name: []}

    @on(plain, sharded)
    async def record(msg: Message, ctx: Context) -> None:
        n, attempt = msg.text.split(".")
        seen[msg.channel].append((int(n), int(attempt)))

    async with running([record], cluster.url) as runner, connect(cluster.url) as bus:
        publisher = SteadyPublisher(bus, (plain, sharded))
        publishing = asyncio.create_task(publisher.run())
        await eventually(lambda: len(seen[sharded.name]) >= 300, what="progress before the failover")
        master = cluster.owner_of(slot)
        replica = cluster.replica_of(master)
        replica.pause()
        try:
            with master.client() as admin:
                # More than the sockets hold: what the master writes next waits in its own buffer
                # for the replica, and dies with it.
                admin.set(f"{{{tag}}}ballast", b"x" * 32_000_000)
            held_back = publisher.count()
            await eventually(lambda: publisher.count() >= held_back + 100, what="messages the replica does not get")
            master.kill()
        finally:
            replica.resume()
        await asyncio.to_thread(cluster.wait_promoted, replica, slot)
        promoted = publisher.count()
        await eventually(lambda: publisher.count() >= promoted + 300, what="publishing on the promoted replica")
        publisher.stop.set()
        await publishing
        for name, returned in publisher.returned.items():
            await eventually(lambda n=name, last=returned[-1]: last in seen[n], what=f"the last message on {name}")  # type: ignore[misc]
        assert await runner.drain(10)

    for name, returned in publisher.returned.items():
        got = seen[name]
        assert got == sorted(got) and len(set(got)) == len(got), f"{name}: out of order or repeated"
        missing = sorted(set(returned) - set(got))
        # Lost, if anything: only what the dead master published (before the promotion), and
        # only if reported; what the promoted replica published is all delivered.
        assert all(sent in returned[:promoted] for sent in missing), f"{name}: lost after the failover: {missing}"
        stats = runner.stats.channels[name]
        assert stats.history_lost >= 1, f"{name}: the failover was not reported ({stats})"
        assert any("NOT recovered" in line for line in not_recovered(caplog, name)), name
        assert set(got) - set(returned) <= failed_attempts(returned), f"{name}: delivered what was never published"


def failed_attempts(returned: list[Sent]) -> set[Any]:
    """The attempts before each returned one: they failed, but may have run on the dying master."""
    return {(n, a) for n, last in returned for a in range(last)}
