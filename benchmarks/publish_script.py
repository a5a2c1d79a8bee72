"""The recoverable channels' publish script against a plain PUBLISH, server side.

    python -m benchmarks.publish_script [--baseline REV] [--n 300000] [--reps 8]

``redis-benchmark -P 100`` runs each on one redis-server (no persistence, emptied before each
run), alternately (the order rotated every repetition), with a 30-byte payload: PUBLISH, and
``EVALSHA`` of this checkout's script with ``history=10000``, naming the channel's epoch (a
publisher's steady state: the script's first run began the epoch); with ``--baseline``, also the
script of that git revision of eventbus/_history.py (either layout: before the stream numbered its
own entries, the script took no epoch). A publish is bound by the server's Lua, so this isolates
what the script costs the server. Prints each run's rate, the medians, and the medians of the
per-repetition ratios.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
from hashlib import sha1
from typing import Any

import redis

from benchmarks.redisproc import RedisServer
from eventbus import _history

PAYLOAD = "payload-of-some-thirty-bytes--"


def revision_module(revision: str) -> dict[str, Any]:
    source = subprocess.run(
        ["git", "show", f"{revision}:eventbus/_history.py"], capture_output=True, text=True, check=True
    ).stdout
    namespace: dict[str, Any] = {"__name__": "baseline_history"}
    exec(compile(source, f"{revision}:eventbus/_history.py", "exec"), namespace)  # that revision of our own module
    return namespace


def script_command(client: redis.Redis, module: dict[str, Any]) -> list[str]:
    """The EVALSHA of ``module``'s publish script, in the steady state of a publisher."""
    script = module["PUBLISH_SCRIPT"]
    sha = client.script_load(script)
    keys = list(module["history_keys"]("bench"))
    if "NO_EPOCH" not in module:  # the layout with a meta hash: no epoch to name
        return ["EVALSHA", sha, "2", *keys, PAYLOAD, "10000", "0", "bench", "publish"]
    _, epoch = client.evalsha(sha, 2, *keys, PAYLOAD, 10_000, module["NO_EPOCH"], 0, "bench", "publish")
    epoch_args = [epoch.decode(), "0", "bench", "publish"]
    return ["EVALSHA", sha1(script.encode()).hexdigest(), "2", *keys, PAYLOAD, "10000", *epoch_args]


def rate(port: int, client: redis.Redis, variant: dict[str, Any] | None, n: int) -> float:
    client.flushall()
    command = ["PUBLISH", "bench", PAYLOAD] if variant is None else script_command(client, variant)
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-n", str(n), "-P", "100", "-q", *command],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", metavar="REV", help="also the publish script of this git revision")
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    variants: dict[str, dict[str, Any] | None] = {"publish": None, "script": vars(_history)}
    if args.baseline:
        variants["baseline"] = revision_module(args.baseline)
    runs: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    with RedisServer() as server, redis.Redis(port=server.port) as client:
        for rep in range(args.reps):
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                runs[name].append(rate(server.port, client, variants[name], args.n))
    for name, rates in runs.items():
        print(f"{name:8} median {statistics.median(rates):11,.0f}/s  runs {[round(r) for r in rates]}")
    for over in names[1:]:
        for under in names[: names.index(over)]:
            ratios = [a / b for a, b in zip(runs[over], runs[under], strict=True)]
            print(
                f"{over}/{under} per repetition {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}"
            )


if __name__ == "__main__":
    main()
