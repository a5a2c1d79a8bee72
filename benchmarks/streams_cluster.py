"""Streams consumer throughput with 1, 2 and 4 workers; sharded vs plain pub/sub on a 3-master cluster.

    python -m benchmarks.streams_cluster [--entries 40000] [--messages 100000] [--reps 3]

Streams: W ``python -m eventbus run`` processes join one consumer group of a no-op handler; they
are SIGSTOPped, N entries are appended (pipelined), they are SIGCONTed, and the clock runs until
the group has read and acknowledged all N (XINFO GROUPS: lag 0, pending 0). So the figure is
read + handle + XACK, across processes, not the producer's speed.

Pub/sub on the cluster: one eventbus consumer subscribed to 24 channels spread over the three
masters, either plain (@on: one connection, every PUBLISH broadcast over the cluster bus) or
sharded (@on(sharded=True): SSUBSCRIBE on each owner, three connections). Drain method of
design.md: the consumer is SIGSTOPped, N messages are published pipelined (PUBLISH to one node,
or SPUBLISH to each channel's owner), then SIGCONT; the consumer times first to Nth message.
Publishing time is reported too: sharded pub/sub's gain is on the servers, not in one consumer.

Medians of ``--reps`` runs; all processes on this machine (2 cores), so 4 workers contend.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from eventbus import Context, Message, StreamMessage, on, on_stream

ROOT = Path(__file__).resolve().parent.parent
STREAM = "bench:stream"
GROUP = "bench"
CHANNELS = [f"bench-{i}" for i in range(24)]
RESULT_KEY = "bench:result"
TARGET = int(os.environ.get("BENCH_TARGET", "0"))


# -- the handler modules the worker processes load ----------------------------------------------


@on_stream(STREAM, group=GROUP, read_count=500, block=1.0, claim_idle=600)
async def stream_noop(msg: StreamMessage, ctx: Context) -> None:
    pass


class _Drain:
    """Times first to TARGET-th message inside the consumer, then stores the result in Redis."""

    first = 0.0
    count = 0

    async def __call__(self, msg: Message, ctx: Context) -> None:
        if self.count == 0:
            self.first = time.perf_counter()
        self.count += 1
        if self.count == TARGET:
            await ctx.redis.set(RESULT_KEY, f"{time.perf_counter() - self.first:.6f}")


# The whole backlog arrives at once: the inbox must hold it, or the drop policy would apply.
plain_drain = on(*CHANNELS, name="plain_drain", inbox_size=10_000_000)(_Drain())
sharded_drain = on(*CHANNELS, sharded=True, name="sharded_drain", inbox_size=10_000_000)(_Drain())


# -- helpers ------------------------------------------------------------------------------------


def _spawn(target: str, url: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "eventbus", "run", target, "--url", url, "--log-level", "warning",
         "--stats-interval", "0", "--grace", "1"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )  # fmt: skip


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for p in processes:
        p.send_signal(signal.SIGCONT)
        p.terminate()
    for p in processes:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.005)


# -- streams ------------------------------------------------------------------------------------


def stream_run(url: str, client: redis.Redis, workers: int, entries: int) -> float:
    client.flushall()
    client.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    procs = [_spawn("benchmarks.streams_cluster:stream_noop", url) for _ in range(workers)]
    try:
        _wait(lambda: len(client.xinfo_consumers(STREAM, GROUP)) == workers, 30, "workers to join")
        for p in procs:
            p.send_signal(signal.SIGSTOP)
        pipe = client.pipeline(transaction=False)
        for i in range(entries):
            pipe.xadd(STREAM, {"data": b"x" * 60, "n": i})
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()
        started = time.perf_counter()
        for p in procs:
            p.send_signal(signal.SIGCONT)

        def done() -> bool:
            info = client.xinfo_groups(STREAM)[0]
            return int(info["lag"] or 0) == 0 and int(info["pending"]) == 0 and int(info["entries-read"]) >= entries

        _wait(done, 300, "the group to finish")
        return entries / (time.perf_counter() - started)
    finally:
        _stop(procs)


# -- pub/sub on the cluster ---------------------------------------------------------------------


def pubsub_run(cluster: Any, sharded: bool, messages: int) -> tuple[float, float]:
    """(consumer drain msg/s, publish msg/s) for one run."""
    from redis.crc import key_slot

    cluster.flushall()
    clients = {n.port: n.client() for n in cluster.nodes}
    for c in clients.values():
        c.config_set("client-output-buffer-limit", "pubsub 0 0 0")
    target = "sharded_drain" if sharded else "plain_drain"
    proc = _spawn(f"benchmarks.streams_cluster:{target}", cluster.url, {"BENCH_TARGET": str(messages)})
    owner = {ch: cluster.owner_of(key_slot(ch.encode())).port for ch in CHANNELS}
    first = clients[cluster.nodes[0].port]
    try:
        if sharded:
            _wait(lambda: all(clients[owner[ch]].execute_command("PUBSUB", "SHARDNUMSUB", ch)[1] for ch in CHANNELS),
                  30, "sharded subscriptions")  # fmt: skip
        else:
            _wait(lambda: all(n for _, n in first.pubsub_numsub(*CHANNELS)), 30, "subscriptions")
        proc.send_signal(signal.SIGSTOP)
        payload = b"x" * 60
        pipes = {port: c.pipeline(transaction=False) for port, c in clients.items()}
        started = time.perf_counter()
        for i in range(messages):
            ch = CHANNELS[i % len(CHANNELS)]
            if sharded:
                pipe = pipes[owner[ch]]
                pipe.execute_command("SPUBLISH", ch, payload)
            else:
                pipe = pipes[cluster.nodes[0].port]
                pipe.publish(ch, payload)
            if len(pipe) >= 1000:
                pipe.execute()
        for pipe in pipes.values():
            pipe.execute()
        publish_rate = messages / (time.perf_counter() - started)
        proc.send_signal(signal.SIGCONT)
        slot_owner = cluster.owner_of(key_slot(RESULT_KEY.encode())).port
        _wait(lambda: clients[slot_owner].get(RESULT_KEY) is not None, 300, "the consumer to drain")
        elapsed = float(clients[slot_owner].get(RESULT_KEY))
        return messages / elapsed, publish_rate
    finally:
        _stop([proc])
        for c in clients.values():
            c.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streams_cluster")
    parser.add_argument("--entries", type=int, default=40_000)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from tests.redis_server import RedisServer
    from tests.scaling.local_cluster import LocalCluster

    print(f"# streams: {args.entries} entries, no-op handler, median of {args.reps}")
    server = RedisServer().start()
    try:
        with server.client() as client:
            for workers in (int(w) for w in args.workers.split(",")):
                rates = [stream_run(server.url, client, workers, args.entries) for _ in range(args.reps)]
                print(f"workers={workers}  {statistics.median(rates):>9,.0f} entries/s  (runs: "
                      + ", ".join(f"{r:,.0f}" for r in rates) + ")", flush=True)  # fmt: skip
    finally:
        server.stop()

    print(f"# pub/sub on a 3-master cluster: {args.messages} messages of 60 bytes, 24 channels, median of {args.reps}")
    cluster = LocalCluster().start()
    try:
        for sharded in (False, True):
            runs = [pubsub_run(cluster, sharded, args.messages) for _ in range(args.reps)]
            drain = statistics.median(r[0] for r in runs)
            publish = statistics.median(r[1] for r in runs)
            kind = "sharded (SSUBSCRIBE/SPUBLISH)" if sharded else "plain (SUBSCRIBE/PUBLISH)"
            print(f"{kind:32s} consumer drain {drain:>9,.0f} msg/s   publish {publish:>9,.0f} msg/s", flush=True)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
