"""A real local Redis Cluster on free ports, for the scaling tests and benchmarks: three masters, and
optionally a replica of each (``LocalCluster(replicas=1)``) that takes over when its master is killed.

Each node is a :class:`~tests.redis_server.RedisServer` with ``cluster-enabled yes``, so a test
can kill and restart one; ``redis-cli --cluster create`` assigns the 16384 slots.
"""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time

import redis

from tests.redis_server import RedisServer


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster-bus port (+10000) is free too; Redis needs it <= 55535."""
    while True:
        port = random.randint(20000, 55000)
        if _bindable(port) and _bindable(port + 10000):
            return port


class LocalCluster:
    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.replicas = replicas
        self.nodes: list[RedisServer] = []
        for _ in range(masters * (1 + replicas)):
            node = RedisServer(port=cluster_port())
            node.extra_args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", f"{node.dir}/nodes.conf",
                "--cluster-node-timeout", "2000",
                # A slot with no owner must not stop the rest of the cluster (we kill nodes).
                "--cluster-require-full-coverage", "no",
                # A replica's first sync starts at once, not after the default 5 s wait for others.
                "--repl-diskless-sync-delay", "0",
            ]  # fmt: skip
            self.nodes.append(node)

    @property
    def url(self) -> str:
        """The eventbus form: every node as a seed."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> LocalCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()  # no orphaned redis-server if a node or the cluster creation fails
            raise

    def _start(self) -> LocalCluster:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed")
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
             "--cluster-replicas", str(self.replicas), "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Until every node says cluster_state:ok and agrees on all 16384 slots, and every replica
        has its master's data (a replica still syncing would miss what is written meanwhile)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                running = [node for node in self.nodes if node.process is not None]
                if all(self._ok(node) for node in running) and all(self._synced(node) for node in running):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("cluster did not become ready")
            time.sleep(0.05)

    @staticmethod
    def _ok(node: RedisServer) -> bool:
        with node.client() as client:
            info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text and "cluster_slots_assigned:16384" in text

    @staticmethod
    def _synced(node: RedisServer) -> bool:
        with node.client() as client:
            info = client.info("replication")
        return info["role"] == "master" or (info["master_link_status"] == "up" and not info["master_sync_in_progress"])

    def node_ids(self) -> dict[int, str]:
        ids = {}
        for node in self.nodes:
            with node.client() as client:
                ids[node.port] = client.execute_command("CLUSTER", "MYID").decode()
        return ids

    def owner_of(self, slot: int) -> RedisServer:
        """The master that owns ``slot`` (as the first running node sees it)."""
        port = self._owner_port(next(n for n in self.nodes if n.process is not None), slot)
        if port is None:
            raise LookupError(slot)
        return next(n for n in self.nodes if n.port == port)

    def replica_of(self, master: RedisServer) -> RedisServer:
        """The replica that replicates ``master`` (a cluster made with ``replicas=1``)."""
        for node in self.nodes:
            if node is not master and node.process is not None:
                with node.client() as client:
                    info = client.info("replication")
                if info["role"] == "slave" and int(info["master_port"]) == master.port:
                    return node
        raise LookupError(f"no replica of the node on port {master.port}")

    def wait_promoted(self, replica: RedisServer, slot: int, timeout: float = 20.0) -> None:
        """Until ``replica`` (whose master was killed) is a master that owns ``slot``, as the
        surviving nodes see it: the failover is over (cluster-node-timeout is 2 s here)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self._role(replica) == "master" and all(
                    self._owner_port(node, slot) == replica.port for node in self.nodes if node.process is not None
                ):
                    return
            except redis.RedisError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the replica on port {replica.port} did not take over slot {slot}")
            time.sleep(0.05)

    @staticmethod
    def _role(node: RedisServer) -> str:
        with node.client() as client:
            return str(client.info("replication")["role"])

    @staticmethod
    def _owner_port(node: RedisServer, slot: int) -> int | None:
        with node.client() as client:
            for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        return None

    def move_slot(self, slot: int, target: RedisServer) -> None:
        """Move an (empty-keyed) slot to ``target`` the way redis-cli --cluster reshard does."""
        source = self.owner_of(slot)
        if source is target:
            return
        ids = self.node_ids()
        with target.client() as t, source.client() as s:
            t.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.port])
            s.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.port])
            while keys := s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                s.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
            for node in self.nodes:
                with node.client() as c:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.port])
        self.wait_ok()

    def reset(self) -> LocalCluster:
        """Healthy and empty again for the next test: a node a fault test killed runs again (a
        killed master comes back as a replica of the one that took over from it)."""
        for node in self.nodes:
            if node.process is None:
                node.start()
        self.wait_ok()
        self.flushall()
        return self

    def flushall(self) -> None:
        """Empty every master (a replica follows; it refuses writes)."""
        for node in self.nodes:
            if node.process is not None and self._role(node) == "master":
                with node.client() as client:
                    client.flushall()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
