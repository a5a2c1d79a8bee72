"""The recoverable channels' publish script against a plain PUBLISH, server side.

    python -m benchmarks.publish_script [--n 300000] [--reps 8]

``redis-benchmark -P 100`` runs each on one redis-server (no persistence, emptied before each
run), the two alternately (the order swapped every repetition), with a 30-byte payload: PUBLISH,
and ``EVALSHA`` of this checkout's script with ``history=10000``, naming the channel's epoch (a
publisher's steady state: the script's first run began the epoch). A publish is bound by the
server's Lua, so this isolates what the script costs the server. Prints each run's rate, the
medians, and the median of the per-repetition ratios (script / PUBLISH).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
from hashlib import sha1

import redis

from benchmarks.redisproc import RedisServer
from eventbus._history import NO_EPOCH, PUBLISH_SCRIPT, history_keys

PAYLOAD = "payload-of-some-thirty-bytes--"


def rate(port: int, client: redis.Redis, variant: str, n: int) -> float:
    client.flushall()
    if variant == "publish":
        command = ["PUBLISH", "bench", PAYLOAD]
    else:
        sha = client.script_load(PUBLISH_SCRIPT)
        stream, top = history_keys("bench")
        _, epoch = client.evalsha(sha, 2, stream, top, PAYLOAD, 10_000, NO_EPOCH, 0, "bench", "publish")
        command = ["EVALSHA", sha1(PUBLISH_SCRIPT.encode()).hexdigest(), "2", stream, top, PAYLOAD, "10000"]
        command += [epoch.decode(), "0", "bench", "publish"]
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-n", str(n), "-P", "100", "-q", *command],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    runs: dict[str, list[float]] = {"publish": [], "script": []}
    with RedisServer() as server, redis.Redis(port=server.port) as client:
        for rep in range(args.reps):
            for variant in ("publish", "script") if rep % 2 == 0 else ("script", "publish"):
                runs[variant].append(rate(server.port, client, variant, args.n))
    for name, rates in runs.items():
        print(f"{name:8} median {statistics.median(rates):11,.0f}/s  runs {[round(r) for r in rates]}")
    ratios = [script / plain for script, plain in zip(runs["script"], runs["publish"], strict=True)]
    print(f"script/PUBLISH per repetition {[round(r, 3) for r in ratios]}, median {statistics.median(ratios):.3f}")


if __name__ == "__main__":
    main()
