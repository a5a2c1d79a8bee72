"""The recoverable channels' publish script of a git revision against this checkout's, server side.

    python -m benchmarks.publish_script --baseline HEAD~1 [--n 300000] [--reps 8]

``redis-benchmark -P 100`` runs ``EVALSHA`` of each script on one redis-server (no persistence,
emptied before each run), the two alternately (the order swapped every repetition), with a
30-byte payload and ``history=10000``. A publish is bound by the server's Lua, so this isolates
what a change to the script costs. Prints each run's rate, the medians, and the median of the
per-repetition ratios (this checkout / baseline).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
from hashlib import sha1

import redis

from benchmarks.redisproc import RedisServer
from eventbus._history import PUBLISH_SCRIPT, history_keys


def baseline_script(revision: str) -> str:
    source = subprocess.run(
        ["git", "show", f"{revision}:eventbus/_history.py"], capture_output=True, text=True, check=True
    ).stdout
    namespace: dict[str, object] = {}
    exec(compile(source, f"{revision}:eventbus/_history.py", "exec"), namespace)  # that revision of our own module
    script = namespace["PUBLISH_SCRIPT"]
    assert isinstance(script, str)
    return script


def rate(port: int, client: redis.Redis, script: str, n: int) -> float:
    client.flushall()
    client.script_load(script)
    stream, meta = history_keys("bench")
    out = subprocess.run(
        ["redis-benchmark", "-p", str(port), "-n", str(n), "-P", "100", "-q",
         "EVALSHA", sha1(script.encode()).hexdigest(), "2", stream, meta,
         "payload-of-some-thirty-bytes--", "10000", "0", "bench", "publish"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return float(re.findall(r"([\d.]+) requests per second", out)[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the git revision to compare with")
    parser.add_argument("--n", type=int, default=300_000)
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    scripts = {"baseline": baseline_script(args.baseline), "this": PUBLISH_SCRIPT}
    runs: dict[str, list[float]] = {name: [] for name in scripts}
    with RedisServer() as server, redis.Redis(port=server.port) as client:
        for rep in range(args.reps):
            for name in ("baseline", "this") if rep % 2 == 0 else ("this", "baseline"):
                runs[name].append(rate(server.port, client, scripts[name], args.n))
    for name, rates in runs.items():
        print(f"{name:9} median {statistics.median(rates):9,.0f}/s  runs {[round(r) for r in rates]}")
    ratios = [this / base for this, base in zip(runs["this"], runs["baseline"], strict=True)]
    print(f"this/baseline per repetition {[round(r, 2) for r in ratios]}, median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
