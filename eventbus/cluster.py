"""Redis Cluster: the URL form, the command client, and the subscribers for plain and sharded pub/sub.

URL form: ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for
TLS). Every ``host:port`` is a seed; one reachable seed is enough, listing several survives a seed
being down. There is no database number on a cluster.

* Plain ``@on`` / ``@on_pattern``: a cluster broadcasts PUBLISH to every node, so one subscription
  connection to any one node sees every message (:class:`ClusterPubSubSubscriber` moves to another
  node when its node goes away).
* ``@on(channel, sharded=True)``: SPUBLISH delivers only on the node (master or its replicas)
  owning the channel's slot, so :class:`ShardedSubscriber` keeps one connection per owning node,
  multiplexing all of that node's channels. When a slot moves, Redis sends ``sunsubscribe`` for its
  channels; the subscriber re-reads the slot map (CLUSTER SLOTS) and subscribes on the new owner.
  On a standalone server the same subscriber uses one connection for all sharded channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from eventbus.config import redact_url
from eventbus.errors import ConfigError, ConnectError, SubscribeError
from eventbus.redis_backend import SUBSCRIBE_CHUNK, Feed, RedisSubscriber, _SubscriptionProtocol, wait_until_reachable
from eventbus.resp import chunks
from eventbus.stats import BusStats

log = logging.getLogger("eventbus.cluster")

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True, slots=True)
class ClusterURL:
    seeds: tuple[tuple[str, int], ...]
    scheme: str  # "redis" or "rediss": what each node's own URL uses
    username: str | None
    password: str | None
    query: str

    def node_url(self, host: str, port: int) -> str:
        """A plain URL for one node, with the cluster URL's credentials and options."""
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        elif self.username:
            auth = f"{quote(self.username, safe='')}@"
        host_part = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{auth}{host_part}:{port}/0" + (f"?{self.query}" if self.query else "")

    def node_urls(self) -> list[str]:
        return [self.node_url(host, port) for host, port in self.seeds]


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0] in CLUSTER_SCHEMES


def parse_cluster_url(url: str) -> ClusterURL:
    """Split ``redis+cluster://[user:pass@]h1:p1,h2:p2`` into seeds; :class:`ConfigError` if malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in CLUSTER_SCHEMES:
        raise ConfigError(f"not a cluster URL: {redact_url(url)} (expected redis+cluster://host:port,...)")
    parts = urlsplit(f"redis://{rest}")
    netloc = parts.netloc
    userinfo, _, hosts = netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, has_password, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if has_password else None
    if parts.path not in ("", "/", "/0"):
        raise ConfigError(f"a cluster has no database number: drop {parts.path!r} from {redact_url(url)}")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, colon, port = item.strip().rpartition(":")
        if not colon:
            host, port = item.strip(), "6379"
        host = host.strip("[]")
        if not host or not port.isdigit():
            raise ConfigError(f"invalid seed {item!r} in cluster URL {redact_url(url)}: expected host:port")
        seeds.append((host, int(port)))
    return ClusterURL(tuple(seeds), CLUSTER_SCHEMES[scheme], username, password, parts.query)


def cluster_client(url: str, *, max_connections: int = 64) -> RedisCluster:
    """redis-py's cluster client: routes each command to the node owning its key's slot."""
    parsed = parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.seeds],
        username=parsed.username,
        password=parsed.password,
        ssl=parsed.scheme == "rediss",
        max_connections=max_connections,
        # A slot without an owner (a master down, no replica) must not stop the other slots.
        require_full_coverage=False,
    )


async def wait_until_cluster_reachable(url: str, timeout: float) -> None:
    """Until one seed answers PING (they are tried in turn), else :class:`ConnectError`."""
    urls = parse_cluster_url(url).node_urls()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for node in urls:
            try:
                await wait_until_reachable(node, 0.5, quiet=True)
                return
            except ConnectError:
                continue
        if loop.time() >= deadline:
            raise ConnectError(f"no seed of the cluster {redact_url(url)} answered within {timeout:.0f}s")
        await asyncio.sleep(0.2)


# -- the slot map ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Which node URL owns which slots; ``ranges`` empty means a standalone server owns them all."""

    ranges: tuple[tuple[int, int, str], ...]
    standalone: str | None = None

    def node_for(self, channel: str) -> str | None:
        if self.standalone is not None:
            return self.standalone
        slot = key_slot(channel.encode("utf-8", "surrogateescape"))
        for start, end, url in self.ranges:
            if start <= slot <= end:
                return url
        return None  # an unassigned slot (its master is down with no replica)

    def masters(self) -> list[str]:
        return list(dict.fromkeys(url for _, _, url in self.ranges)) or [self.standalone or ""]


async def fetch_slot_map(candidates: Sequence[str], node_url: Any) -> SlotMap:
    """CLUSTER SLOTS from the first candidate that answers; a non-cluster server owns every slot.

    ``node_url(host, port)`` turns an announced address into a URL with the right credentials.
    """
    errors = []
    for url in dict.fromkeys(candidates):
        client = aioredis.Redis.from_url(url, socket_connect_timeout=1.0, socket_timeout=2.0)
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


# -- plain pub/sub on a cluster ----------------------------------------------------------------


class ClusterPubSubSubscriber(RedisSubscriber):
    """One subscription connection to any node; on loss it reconnects to the next node in turn."""

    def __init__(self, node_urls: Sequence[str], stats: BusStats, **options: Any) -> None:
        if not node_urls:
            raise ConfigError("a cluster needs at least one node")
        super().__init__(node_urls[0], stats, **options)
        self.node_urls = list(node_urls)
        self._next = 0

    async def _connect_and_subscribe(self) -> None:
        last: BaseException | None = None
        for _ in range(len(self.node_urls)):
            self._use(self.node_urls[self._next % len(self.node_urls)])
            self._next += 1
            try:
                await super()._connect_and_subscribe()
                return
            except (OSError, TimeoutError, ConnectionError, hiredis.ReplyError) as exc:
                last = exc
        assert last is not None
        raise last

    def _use(self, url: str) -> None:
        from redis.asyncio.connection import parse_url

        self.url = url
        self.safe_url = redact_url(url)
        self.params = dict(parse_url(url))


# -- sharded pub/sub ---------------------------------------------------------------------------


class _NodeSubscriber(RedisSubscriber):
    """The SSUBSCRIBE connection to one node: its channels, resubscribed after every reconnect."""

    def __init__(self, owner: ShardedSubscriber, url: str, stats: BusStats, **options: Any) -> None:
        super().__init__(url, stats, **options)
        self.owner = owner

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

    async def _ssubscribe(self, protocol: _SubscriptionProtocol, names: list[str]) -> None:
        # SSUBSCRIBE takes channels of one slot at a time (else CROSSSLOT): group them by slot.
        by_slot: dict[int, list[str]] = {}
        for name in names:
            by_slot.setdefault(key_slot(name.encode("utf-8", "surrogateescape")), []).append(name)
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
        *,
        node_url: Any = None,
        refresh_interval: float = 5.0,
        **options: Any,
    ) -> None:
        self.seed_urls = list(seed_urls)
        self.stats = stats
        self.node_url = node_url or (lambda host, port: f"redis://{host}:{port}/0")
        self.refresh_interval = refresh_interval
        self.options = options
        self.channels: list[str] = []
        self.nodes: dict[str, _NodeSubscriber] = {}
        self.slot_map: SlotMap | None = None
        self.rebalances = 0
        self._feed: Feed | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._refresher: asyncio.Task[None] | None = None

    async def start(self, feed: Feed, channels: Sequence[str]) -> None:
        self._feed = feed
        self.channels = list(dict.fromkeys(channels))
        await self.rebalance(initial=True)
        self._refresher = asyncio.create_task(self._refresh_loop(), name="eventbus:sharded-slots")

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
        await asyncio.gather(*(node.stop() for node in self.nodes.values()), return_exceptions=True)
        self.nodes.clear()

    def slots_changed(self, reason: str) -> None:
        """Something says a slot moved: re-read the slot map soon."""
        log.info("sharded subscriptions: %s; re-reading the slot map", reason)
        self._wake.set()

    def _feed_for(self, node: str) -> Feed:
        feed = self._feed
        assert feed is not None

        def on_push(reply: list[Any]) -> None:
            if reply[0] == b"sunsubscribe":
                self._unsubscribed_by_server(node, reply[1])
            else:
                feed(reply)

        return on_push

    def _unsubscribed_by_server(self, node: str, raw: bytes) -> None:
        # We never send SUNSUBSCRIBE: this is Redis telling us the channel's slot left this node.
        channel = raw.decode("utf-8", "surrogateescape")
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
                    subscriber = _NodeSubscriber(self, url, self.stats, **self.options)
                    try:
                        await subscriber.start(self._feed_for(url), names, [])
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
                    "messages published during the move are lost",
                    moved,
                )

    async def _refresh_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.refresh_interval)
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


def pubsub_subscriber(url: str, stats: BusStats, **options: Any) -> RedisSubscriber:
    """The plain pub/sub subscriber for ``url``: any node of a cluster, else the server itself."""
    if is_cluster_url(url):
        return ClusterPubSubSubscriber(parse_cluster_url(url).node_urls(), stats, **options)
    return RedisSubscriber(url, stats, **options)
