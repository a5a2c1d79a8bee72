from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from eventbus._loops import loop_factory
from tests.redis_server import RedisServer, SentinelProcess
from tests.scaling.local_cluster import LocalCluster

ROOT = Path(__file__).resolve().parent.parent


def _uvloop_or_skip() -> Callable[[], asyncio.AbstractEventLoop]:
    try:
        import uvloop
    except ImportError:

        def skip() -> asyncio.AbstractEventLoop:
            pytest.skip("uvloop is not installed (pip install -e '.[dev]' brings it)")

        return skip
    return uvloop.new_event_loop


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Callable[[], object]]:
    """Async tests run on asyncio's own loop; those marked ``both_loops`` run on uvloop as well."""
    factories: dict[str, Callable[[], object]] = {"asyncio": loop_factory("asyncio")}
    if item.get_closest_marker("both_loops") is not None:
        factories["uvloop"] = _uvloop_or_skip()
    return factories


@pytest.fixture(scope="session")
def shared_redis_server() -> Iterator[RedisServer]:
    """One private server for tests that only need a clean database (flushed per test)."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(shared_redis_server: RedisServer) -> RedisServer:
    """A clean private redis-server (shared by the session, FLUSHALL before each test)."""
    if shared_redis_server.process is None:
        shared_redis_server.start()
    with shared_redis_server.client() as client:
        client.flushall()
        client.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
    return shared_redis_server


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server for this test alone: fault tests kill, pause and restart it."""
    server = RedisServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_cluster() -> Iterator[LocalCluster]:
    """Three redis-server masters in one cluster, created once per session (about 2 s)."""
    cluster = LocalCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster(shared_cluster: LocalCluster) -> LocalCluster:
    """The session's cluster, healthy and empty (a fault test may have restarted a node)."""
    return shared_cluster.reset()


@pytest.fixture(scope="session")
def shared_replicated_cluster() -> Iterator[LocalCluster]:
    """Three masters, each with a replica (six nodes), created once per session by the tests that
    kill a master: they cost a few seconds to start."""
    cluster = LocalCluster(replicas=1).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def replicated_cluster(shared_replicated_cluster: LocalCluster) -> LocalCluster:
    """The session's replicated cluster, every node running and synced, and empty. A node killed by
    an earlier test comes back as a replica of the one that took over from it."""
    return shared_replicated_cluster.reset()


@pytest.fixture(scope="session")
def shared_sentinel() -> Iterator[tuple[RedisServer, SentinelProcess]]:
    """A master and one sentinel watching it, started once per session."""
    master = RedisServer().start()
    try:
        sentinel = SentinelProcess(master.port)
    except BaseException:
        master.stop()
        raise
    yield master, sentinel
    sentinel.stop()
    master.stop()


@pytest.fixture
def redis_sentinel(shared_sentinel: tuple[RedisServer, SentinelProcess]) -> tuple[RedisServer, SentinelProcess]:
    """The session's master (running and empty) and its sentinel."""
    master, sentinel = shared_sentinel
    if master.process is None:
        master.start()
    with master.client() as client:
        client.flushall()
    return master, sentinel


@pytest.fixture
def sync_redis(redis_server: RedisServer) -> Iterator[redis.Redis]:
    with redis_server.client() as client:
        yield client


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for running `python -m eventbus` as a subprocess from the repo root."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    # Documented commands say `python`: the interpreter running the tests, as in an activated
    # venv, also when pytest was started as .venv/bin/pytest without activating it.
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    env.pop("EVENTBUS_URL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def python() -> str:
    return sys.executable
