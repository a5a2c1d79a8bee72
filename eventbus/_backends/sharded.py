"""Sharded pub/sub (``@on(channel, sharded=True)``): one SSUBSCRIBE connection per node owning slots.

SPUBLISH delivers only on the node (master or its replicas) owning the channel's slot, so
:class:`ShardedSubscriber` keeps one connection per owning node, multiplexing all of that node's
channels. When a slot moves, Redis sends ``sunsubscribe`` for its channels; the subscriber re-reads
the slot map (CLUSTER SLOTS) and subscribes on the new owner. On a standalone server the same
subscriber uses one connection for all sharded channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.crc import key_slot

from eventbus._backends.base import Consume, Reader
from eventbus._backends.resp import chunks
from eventbus._backends.subscriber import SUBSCRIBE_CHUNK, RedisSubscriber, _SubscriptionProtocol, no_client_setinfo
from eventbus._errors import ConnectError, SubscribeError
from eventbus._names import decode_name, encode_name
from eventbus._settings import ConnectionSettings
from eventbus._stats import BusStats
from eventbus._urls import redact_url

log = logging.getLogger("eventbus.cluster")

NodeURL = Callable[[str, int], str]


def standalone_node_url(host: str, port: int) -> str:
    return f"redis://{host}:{port}/0"


# -- the slot map ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Which node URL owns which slots; ``ranges`` empty means a standalone server owns them all."""

    ranges: tuple[tuple[int, int, str], ...]
    standalone: str | None = None

    def node_for(self, channel: str) -> str | None:
        if self.standalone is not None:
            return self.standalone
        slot = key_slot(encode_name(channel))
        for start, end, url in self.ranges:
            if start <= slot <= end:
                return url
        return None  # an unassigned slot (its master is down with no replica)

    def masters(self) -> list[str]:
        return list(dict.fromkeys(url for _, _, url in self.ranges)) or [self.standalone or ""]


async def fetch_slot_map(candidates: Sequence[str], node_url: NodeURL) -> SlotMap:
    """CLUSTER SLOTS from the first candidate that answers; a non-cluster server owns every slot.

    ``node_url(host, port)`` turns an announced address into a URL with the right credentials.
    """
    errors = []
    for url in dict.fromkeys(candidates):
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0, **no_client_setinfo())
        try:
            reply = await client.execute_command("CLUSTER", "SLOTS")  # type: ignore[no-untyped-call]
        except aioredis.ResponseError as exc:
            if "cluster support disabled" in str(exc):
                return SlotMap((), standalone=url)
            errors.append(f"{redact_url(url)}: {exc}")
            continue
        except (aioredis.ConnectionError, aioredis.TimeoutError, OSError) as exc:
            errors.append(f"{redact_url(url)}: {exc}")
            continue
        finally:
            await client.aclose()
        ranges = []
        for row in _slot_rows(reply):
            start, end, master = int(row[0]), int(row[1]), row[2]
            host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
            ranges.append((start, end, node_url(host or "127.0.0.1", int(master[1]))))
        return SlotMap(tuple(sorted(ranges)))
    raise ConnectError("no cluster node answered CLUSTER SLOTS: " + "; ".join(errors))


def _slot_rows(reply: Any) -> list[Any]:
    # redis-py may already parse CLUSTER SLOTS into {(start, end): {...}}; normalise to raw rows.
    if isinstance(reply, dict):
        return [(s, e, info["primary"]) for (s, e), info in reply.items()]
    return list(reply)


# -- sharded pub/sub ---------------------------------------------------------------------------


class _NodeSubscriber(RedisSubscriber):
    """The SSUBSCRIBE connection to one node: its channels, resubscribed after every reconnect."""

    def __init__(self, owner: ShardedSubscriber, url: str, stats: BusStats, settings: ConnectionSettings) -> None:
        super().__init__(url, stats, settings)
        self.owner = owner
        self.resubscribed = owner.resubscribed
        # A node that went away may have failed over to its replica: look at the slot map now.
        self.lost_listeners.append(lambda reason: owner.slots_changed(f"lost {self.safe_url} ({reason})"))
        # And whoever listens to the sharded subscriber hears of it (recovery holds its channels).
        self.lost_listeners.append(owner.node_lost)

    async def _subscribe(self, protocol: _SubscriptionProtocol) -> None:
        await self._ssubscribe(protocol, list(self.channels))

    async def ssubscribe(self, names: list[str]) -> None:
        """Subscribe more channels on the live connection (the reconnect path covers a dead one)."""
        protocol = self._protocol
        if protocol is not None and self.connected.is_set():
            try:
                await self._ssubscribe(protocol, names)
            except (ConnectionError, OSError) as exc:
                log.info("SSUBSCRIBE on %s interrupted (%s); the reconnect resubscribes", self.safe_url, exc)

    def problems(self) -> list[str]:
        return [] if self.connected.is_set() else [f"sharded subscription to {self.safe_url} down (reconnecting)"]

    async def _ssubscribe(self, protocol: _SubscriptionProtocol, names: list[str]) -> None:
        # SSUBSCRIBE takes channels of one slot at a time (else CROSSSLOT): group them by slot.
        by_slot: dict[int, list[str]] = {}
        for name in names:
            by_slot.setdefault(key_slot(encode_name(name)), []).append(name)
        batches = [batch for group in by_slot.values() for batch in chunks(group, SUBSCRIBE_CHUNK)]
        futures = [(batch, protocol.send("SSUBSCRIBE", *batch, replies=len(batch))) for batch in batches]
        moved: list[str] = []
        for batch, future in futures:
            try:
                await future
            except hiredis.ReplyError as exc:
                if str(exc).startswith(("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")):
                    moved.extend(batch)
                    continue
                raise SubscribeError(f"Redis refused SSUBSCRIBE to {', '.join(map(repr, batch[:5]))}: {exc}") from None
        if moved:
            self.channels = [c for c in self.channels if c not in set(moved)]
            self.owner.slots_changed(f"{len(moved)} channel(s) not served by {self.safe_url} any more")


class ShardedSubscriber:
    """Sharded channels on the nodes owning their slots: one multiplexed connection per node."""

    def __init__(
        self,
        seed_urls: Sequence[str],
        stats: BusStats,
        settings: ConnectionSettings | None = None,
        *,
        node_url: NodeURL = standalone_node_url,
        refresh_interval: float = 5.0,
    ) -> None:
        self.seed_urls = list(seed_urls)
        self.stats = stats
        self.node_url = node_url
        self.refresh_interval = refresh_interval
        self.settings = settings if settings is not None else ConnectionSettings()
        self.channels: list[str] = []
        self.nodes: dict[str, _NodeSubscriber] = {}
        self.slot_map: SlotMap | None = None
        self.rebalances = 0
        self._consume: Consume | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None
        self.resubscribed: list[Callable[[], None]] = []  # told after a node's reconnect
        self.lost_listeners: list[Callable[[str], None]] = []  # told when a node's connection is lost

    async def start(self, consume: Consume, channels: Sequence[str], patterns: Sequence[str] = ()) -> None:
        """Subscribe ``channels`` on their nodes (sharded pub/sub has no patterns)."""
        self._consume = consume
        self.channels = list(dict.fromkeys(channels))
        await self.rebalance(initial=True)
        log.info(
            "subscribed to %d sharded channel(s) on %d node(s) of %s",
            len(self.channels),
            len(self.nodes),
            ", ".join(redact_url(u) for u in self.seed_urls[:3]),
        )
        self._refresher = asyncio.create_task(self._refresh_loop(), name="eventbus:sharded-slots")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await asyncio.gather(*(node.stop() for node in self.nodes.values()), return_exceptions=True)
        self.nodes.clear()

    def is_connected(self) -> bool:
        return bool(self.nodes) and all(node.is_connected() for node in self.nodes.values())

    def problems(self) -> list[str]:
        """One line per node connection that is down."""
        return [problem for node in list(self.nodes.values()) for problem in node.problems()]

    def node_lost(self, reason: str) -> None:
        """One node's connection was lost: tell the listeners, as one subscriber's loss is told."""
        for listener in self.lost_listeners:
            listener(reason)

    def slots_changed(self, reason: str) -> None:
        """Something says a slot moved: re-read the slot map soon."""
        log.info("sharded subscriptions: %s; re-reading the slot map", reason)
        self._wake.set()

    def _consume_for(self, node: str) -> Consume:
        """The sink for one node's connection: the runner's, plus the slot-migration notices."""
        consume = self._consume
        assert consume is not None

        def consume_node(reader: Reader) -> list[Any]:
            others = consume(reader)
            if not others:
                return others
            # The sink returns what is not a message; "sunsubscribe" is ours to handle.
            kept = []
            for reply in others:
                if type(reply) is list and reply and reply[0] == b"sunsubscribe":
                    self._unsubscribed_by_server(node, reply[1])
                else:
                    kept.append(reply)
            return kept

        return consume_node

    def _unsubscribed_by_server(self, node: str, raw: bytes) -> None:
        # We never send SUNSUBSCRIBE: this is Redis telling us the channel's slot left this node.
        channel = decode_name(raw)
        subscriber = self.nodes.get(node)
        if subscriber is not None and channel in subscriber.channels:
            subscriber.channels = [c for c in subscriber.channels if c != channel]
        self.slots_changed(f"{redact_url(node)} unsubscribed {channel!r} (slot migrated)")

    async def rebalance(self, *, initial: bool = False) -> None:
        """Put every channel on the node that owns its slot now; start and stop node connections."""
        async with self._lock:
            candidates = [*self.seed_urls, *self.nodes]
            if self.slot_map is not None:
                candidates += self.slot_map.masters()
            slot_map = await fetch_slot_map([c for c in candidates if c], self.node_url)
            self.slot_map = slot_map
            wanted: dict[str, list[str]] = {}
            for channel in self.channels:
                owner = slot_map.node_for(channel)
                if owner is None:
                    log.warning("no node owns the slot of sharded channel %r yet; retrying", channel)
                    continue
                wanted.setdefault(owner, []).append(channel)
            for url, node in list(self.nodes.items()):
                keep = set(wanted.get(url, ()))
                node.channels = [c for c in node.channels if c in keep]
                if not node.channels and url not in wanted:
                    await node.stop()
                    del self.nodes[url]
            moved = 0
            for url, names in wanted.items():
                subscriber = self.nodes.get(url)
                if subscriber is None:
                    subscriber = _NodeSubscriber(self, url, self.stats, self.settings)
                    try:
                        await subscriber.start(self._consume_for(url), names, [])
                    except (OSError, TimeoutError, ConnectionError, hiredis.ReplyError) as exc:
                        if initial:
                            raise
                        log.warning("cannot reach %s for sharded channels yet: %s", redact_url(url), exc)
                        self._wake.set()
                        continue
                    self.nodes[url] = subscriber
                    moved += 0 if initial else len(names)
                    continue
                missing = [c for c in names if c not in subscriber.channels]
                if missing:
                    subscriber.channels = [*subscriber.channels, *missing]
                    await subscriber.ssubscribe(missing)
                    moved += len(missing)
            if moved:
                self.rebalances += 1
                log.warning(
                    "resubscribed %d sharded channel(s) on their new node(s); sharded pub/sub is at-most-once: "
                    "messages published during the move are lost (recoverable channels read them back)",
                    moved,
                )
                for told in self.resubscribed:  # a move is a gap, as a reconnect is
                    told()

    async def _refresh_loop(self) -> None:
        while True:
            # While a node is down its slots may be failing over to a replica: look more often.
            interval = self.refresh_interval if self.is_connected() else min(self.refresh_interval, 0.5)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), interval)
            woken = self._wake.is_set()
            self._wake.clear()
            if woken:
                await asyncio.sleep(0.05)  # let a migration finish announcing itself
            try:
                await self.rebalance()
            except Exception as exc:  # noqa: BLE001 - the next period retries
                log.warning("could not refresh the cluster slot map: %s: %s", type(exc).__name__, exc)
                await asyncio.sleep(0.5)
                self._wake.set()
