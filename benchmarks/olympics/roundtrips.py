"""Round trips, commands and Python time per purchase of ``apps.olympics`` (issue 15), in-process.

    python -m benchmarks.olympics.roundtrips [--n 5000] [--reps 5] [--profile]

The drain method of scenario 5 without a second process: the app runs in this process with its
handlers wrapped to count finished messages; once every subscription is in place, the whole backlog
is published *while this process's event loop is blocked* (a synchronous raw-RESP pipeline called
from a coroutine), so Redis queues it on the subscription connection exactly as it does for a
SIGSTOPped consumer. The clock and ``time.process_time`` then run until every handler has finished
its last message. Per purchase it reports:

- ``commands``: commands Redis executed for the handlers (``INFO commandstats`` delta);
- ``round trips``: writes of the command client's lanes (one per loop turn that issued commands);
- ``coalesced``: reads answered by another caller's identical read in the same batch;
- ``cpu µs``: this process's CPU time (every listener, the reader, the command client);
- ``redis cpu µs``: redis-server's CPU time over the same span (it shares the machine's cores).

It also checks the final state against the exact expected one. ``--profile`` runs one more
repetition under cProfile and prints the functions with the most own time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import importlib
import io
import os
import pstats
import statistics
import sys
import time
import types
from typing import Any

import eventbus
from benchmarks.olympics import data
from benchmarks.redisproc import RedisServer
from eventbus._backends import autopipeline

APP = "apps.olympics"


def _count_flushes() -> dict[str, int]:
    """Count the lanes' socket writes (round trips) by wrapping ``_Lane._flush``."""
    counts = {"writes": 0}
    original = autopipeline._Lane._flush
    if getattr(original, "_counted", False):
        return original._counts  # type: ignore[attr-defined, no-any-return]

    @functools.wraps(original)
    def flush(self: Any) -> None:
        if self._out:
            counts["writes"] += 1
        original(self)

    flush._counted = True  # type: ignore[attr-defined]
    flush._counts = counts  # type: ignore[attr-defined]
    autopipeline._Lane._flush = flush  # type: ignore[method-assign]
    return counts


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid``, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _commandstats(server: RedisServer) -> dict[str, int]:
    with server.client() as c:
        raw = c.call("INFO", "commandstats").decode()
    out = {}
    for line in raw.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_") :].split(":", 1)
            out[name] = int(rest.split(",")[0].split("=")[1])
    return out


async def one_run(n: int, profile: cProfile.Profile | None = None, eager: bool = False) -> dict[str, float]:
    if eager:  # Python 3.12+: a new task runs its first step at once, inside create_task
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
    orders = data.orders(n)
    channels = list(data.published_channels(orders))
    app = importlib.import_module(APP)
    router = eventbus.Router.from_module(app)
    expected = 0
    for h in router.handlers:
        for s in h.subscriptions:
            if s.kind == "channel":
                expected += channels.count(s.name)
            else:
                from eventbus._glob import glob_match

                expected += sum(1 for c in channels if glob_match(s.name.encode(), c.encode()))
    done = asyncio.Event()
    left = [expected]

    def wrap(func: Any, batch: bool) -> Any:
        @functools.wraps(func)
        async def counted(first: Any, *rest: Any) -> None:
            await func(first, *rest)
            left[0] -= len(first) if batch else 1
            if not left[0]:
                done.set()

        return counted

    wrapped = {h.func: wrap(h.func, h.options.batch is not None) for h in router.handlers}
    module = types.ModuleType(app.__name__, app.__doc__)
    for name, value in vars(app).items():
        with contextlib.suppress(TypeError):  # an unhashable attribute is not a handler
            value = wrapped.get(value, value)
        setattr(module, name, value)

    flushes = _count_flushes()
    with RedisServer() as server:
        server.unlimited_pubsub_buffers()
        with server.client() as c:
            c.pipeline(data.store_commands(orders))
        runner = eventbus.Runner(module, url=f"redis://127.0.0.1:{server.port}", log_level=None)
        async with runner:
            before = _commandstats(server)
            writes0, coalesced0 = flushes["writes"], getattr(runner.redis, "coalesced", 0)
            with server.client() as pub:  # blocks the loop: the backlog queues up in Redis
                pub.pipeline(data.publish_commands(orders))
            wall0, cpu0 = time.perf_counter(), time.process_time()
            server_cpu0 = _process_cpu(server._proc.pid)
            if profile is not None:
                profile.enable()
            await asyncio.wait_for(done.wait(), 300)
            if profile is not None:
                profile.disable()
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            server_cpu = _process_cpu(server._proc.pid) - server_cpu0
            writes, hits = flushes["writes"] - writes0, getattr(runner.redis, "coalesced", 0) - coalesced0
            after = _commandstats(server)
        state = data.dump_state(server.url)
    commands = sum(after.get(k, 0) - before.get(k, 0) for k in after if k not in ("publish", "info"))
    by_name = {k: (after[k] - before.get(k, 0)) / n for k in after if k not in ("publish", "info")}
    return {
        "purchases_per_s": n / wall,
        "cpu_us": cpu / n * 1e6,
        "redis_cpu_us": server_cpu / n * 1e6,  # redis-server's, at the kernel's tick resolution
        "commands": commands / n,
        "round_trips": writes / n,
        "coalesced": hits / n,
        "exact": float(state == data.expected_state(orders)),
        **{f"cmd_{k}": round(v, 3) for k, v in sorted(by_name.items()) if v},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--eager", action="store_true", help="asyncio.eager_task_factory (Python 3.12+)")
    args = parser.parse_args()
    os.environ["OLYMPICS_SIMULATE"] = "0"
    sys.stdout, out = open(os.devnull, "w"), sys.stdout  # noqa: SIM115 - the alerts are discarded
    runs = [asyncio.run(one_run(args.n, eager=args.eager)) for _ in range(args.reps)]
    keys = list(runs[0])
    eager = ", eager tasks" if args.eager else ""
    print(f"{args.reps} runs of {args.n} purchases, Python {sys.version.split()[0]}{eager}; medians:", file=out)
    for k in keys:
        print(f"  {k:18} {statistics.median(r.get(k, 0) for r in runs):12.3f}", file=out)
    if args.profile:
        prof = cProfile.Profile()
        asyncio.run(one_run(args.n, prof))
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue(), file=out)


if __name__ == "__main__":
    main()
