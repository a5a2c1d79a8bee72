"""Redis Cluster: the URL form, the command client, and the subscribers for plain and sharded pub/sub.

URL form: ``redis+cluster://[user:password@]host:port[,host:port...]`` (``rediss+cluster://`` for
TLS). Every ``host:port`` is a seed; one reachable seed is enough, listing several survives a seed
being down. There is no database number on a cluster.

* Plain ``@on`` / ``@on_pattern``: a cluster broadcasts PUBLISH to every node, so one subscription
  connection to any one node sees every message (:class:`ClusterPubSubSubscriber` moves to another
  node when its node goes away).
* ``@on(channel, sharded=True)``: :class:`~eventbus._backends.sharded.ShardedSubscriber`, seeded
  with the cluster's nodes.

The URL grammar itself is pure and lives in :mod:`eventbus._urls` (validation needs it too).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url

from eventbus._backends.base import ConnectionSettings
from eventbus._backends.redis import RedisBackend
from eventbus._backends.sharded import ShardedSubscriber
from eventbus._backends.subscriber import RedisSubscriber, wait_until_reachable
from eventbus._errors import ConfigError, ConnectError
from eventbus._stats import BusStats
from eventbus._urls import parse_cluster_url, redact_url

log = logging.getLogger("eventbus.cluster")


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

    def command_client(self, max_connections: int) -> Any:
        return cluster_client(self.url, max_connections=max_connections)

    def subscriber(self, stats: BusStats) -> ClusterPubSubSubscriber:
        return ClusterPubSubSubscriber(parse_cluster_url(self.url).node_urls(), stats, self.settings)

    def sharded_subscriber(self, stats: BusStats) -> ShardedSubscriber:
        parsed = parse_cluster_url(self.url)
        return ShardedSubscriber(parsed.node_urls(), stats, self.settings, node_url=parsed.node_url)
