from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.scaling.local_cluster import LocalCluster


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[LocalCluster]:
    """Three redis-server masters in one cluster, created once per session (about 2 s)."""
    cluster = LocalCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(shared_cluster: LocalCluster) -> LocalCluster:
    """The session's cluster, healthy and empty (a fault test may have restarted a node)."""
    for node in shared_cluster.nodes:
        if node.process is None:
            node.start()
    shared_cluster.wait_ok()
    shared_cluster.flushall()
    return shared_cluster
