"""Redis Cluster: the URL form, the command client, and the subscribers for plain and sharded pub/sub.

URL form: ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for
TLS). Every ``host:port`` is a seed; one reachable seed is enough, listing several survives a seed
being down. There is no database number on a cluster.

* Plain ``@on`` / ``@on_pattern``: a cluster broadcasts PUBLISH to every node, so one subscription
  connection to any one node sees every message (:class:`ClusterPubSubSubscriber` moves to another
  node when its node goes away).
* ``@on(channel, sharded=True)``: :class:`~eventbus._backends.sharded.ShardedSubscriber`, seeded
  with the cluster's nodes.

A transport of the scheme table (:mod:`eventbus._backends`): this module owns the cluster URL's
grammar (:func:`parse_cluster_url`, :func:`check_url`), its command client, its reachability check
and :func:`open_backend`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url

from eventbus._backends.redis import RedisBackend
from eventbus._backends.sharded import ShardedSubscriber
from eventbus._backends.subscriber import RedisSubscriber
from eventbus._backends.subscriber import wait_until_reachable as wait_until_server_reachable
from eventbus._errors import ConfigError, ConnectError
from eventbus._settings import DEFAULT_MAX_CONNECTIONS, ConnectionSettings
from eventbus._stats import BusStats
from eventbus._urls import check_options, host_port, redact_url, server_url, split_credentials, split_url

log = logging.getLogger("eventbus.cluster")


# -- the URL grammar --------------------------------------------------------------------------

SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}  # the scheme of each node's own URL


@dataclass(frozen=True, slots=True)
class ClusterURL:
    seeds: tuple[tuple[str, int], ...]
    scheme: str  # "redis" or "rediss": what each node's own URL uses
    username: str | None
    password: str | None
    query: str

    def node_url(self, host: str, port: int) -> str:
        """A plain URL for one node, with the cluster URL's credentials and options."""
        url = server_url(self.scheme, self.username, self.password, host, port, 0)
        return url + (f"?{self.query}" if self.query else "")

    def node_urls(self) -> list[str]:
        return [self.node_url(host, port) for host, port in self.seeds]


def parse_cluster_url(url: str) -> ClusterURL:
    """Split ``redis+cluster://[user:pass@]h1:p1,h2:p2`` into seeds; :class:`ConfigError` if malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError(f"not a cluster URL: {redact_url(url)} (expected redis+cluster://host:port,...)")
    parts = split_url(f"redis://{rest}", f"invalid cluster URL {redact_url(url)}")
    username, password, hosts = split_credentials(parts.netloc)
    if parts.path not in ("", "/", "/0"):
        raise ConfigError(f"a cluster has no database number: drop {parts.path!r} from {redact_url(url)}")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        seed = host_port(item, 6379)
        if seed is None:
            raise ConfigError(f"invalid seed {item!r} in cluster URL {redact_url(url)}: expected host:port")
        seeds.append(seed)
    return ClusterURL(tuple(seeds), SCHEMES[scheme], username, password, parts.query)


def check_url(url: str, where: str, reveal: bool) -> None:
    """The seeds, then the query options each node's URL takes: :class:`ConfigError` naming the bad part."""
    parse_cluster_url(url)
    check_options(url, where, reveal, SCHEMES[url.partition("://")[0]])


# -- connecting -------------------------------------------------------------------------------


def command_client(
    url: str, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, autopipeline: bool | None = None
) -> RedisCluster:
    """redis-py's cluster client: routes each command to the node owning its key's slot.

    ``autopipeline`` is not for a cluster: its commands go to the node of their slot, one by one.
    """
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


async def wait_until_reachable(url: str, timeout: float, *, quiet: bool = False) -> None:
    """Until one seed answers PING (they are tried in turn), else :class:`ConnectError`."""
    urls = parse_cluster_url(url).node_urls()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        for node in urls:
            try:
                await wait_until_server_reachable(node, 0.5, quiet=True)
                return
            except ConnectError:
                continue
        if loop.time() >= deadline:
            raise ConnectError(f"no seed of the cluster {redact_url(url)} answered within {timeout:.0f}s")
        await asyncio.sleep(0.2)


# -- plain pub/sub on a cluster ----------------------------------------------------------------


class ClusterPubSubSubscriber(RedisSubscriber):
    """One subscription connection to any node; on loss it reconnects to the next node in turn."""

    def __init__(self, node_urls: Sequence[str], stats: BusStats, settings: ConnectionSettings | None = None) -> None:
        if not node_urls:
            raise ConfigError("a cluster needs at least one node")
        super().__init__(node_urls[0], stats, settings)
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
        self.url = url
        self.safe_url = redact_url(url)
        self.params = dict(parse_url(url))


class ClusterBackend(RedisBackend):
    """``redis+cluster://``: redis-py's cluster client, and subscribers that know the nodes."""

    # PUBLISH's count is the receiving node's own subscribers, not the cluster's (SPUBLISH's is the
    # shard's): a requester cannot conclude "no responder" from a count of 0 on a plain channel.
    counts_receivers = False

    def command_client(self, max_connections: int) -> Any:
        return command_client(self.url, max_connections=max_connections)

    def subscriber(self, stats: BusStats) -> ClusterPubSubSubscriber:
        return ClusterPubSubSubscriber(parse_cluster_url(self.url).node_urls(), stats, self.settings)

    def sharded_subscriber(self, stats: BusStats) -> ShardedSubscriber:
        parsed = parse_cluster_url(self.url)
        return ShardedSubscriber(parsed.node_urls(), stats, self.settings, node_url=parsed.node_url)


async def open_backend(
    url: str, settings: ConnectionSettings, *, source: str, explicit: bool, timeout: float, quiet: bool = False
) -> ClusterBackend:
    """The backend for the cluster at ``url``, once a seed answers (within ``timeout``, else ConnectError)."""
    await wait_until_reachable(url, timeout, quiet=quiet)
    return ClusterBackend(url, settings, source=source, explicit=explicit)
