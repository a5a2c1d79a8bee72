"""Recoverable channels side by side with plain ones (issue 22): publish, drain, and replay.

    python -m benchmarks.recovery [--n 200000] [--replay 100000] [--reps 3]

- publish: messages/s through ``eventbus.connect()``'s publisher, 100 publishes in flight at a
  time (auto-pipelined), plain ``publish("bench", ...)`` against ``publish(Channel("bench",
  history=N), ...)`` (the Lua script: append, trim, publish with offset and epoch);
- drain: the design's method (start the consumer, SIGSTOP it, publish N, SIGCONT, time the first
  to the Nth message inside the consumer), a plain channel against a recoverable one; also per
  second of the consumer's CPU time over the same messages, which the machine's other processes
  disturb less than the wall clock;
- replay: the consumer is SIGSTOPped and Redis drops its connection past a small output-buffer
  limit while ``--replay`` messages are published; after SIGCONT it reconnects and reads them
  from the history. Rate over the messages that came from the history, against the live drain.

Each figure is the median of ``--reps`` runs, in one process run; every measurement has its own
redis-server. The consumer runs with default settings (the compiled hot path if it is built).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from benchmarks.redisproc import RedisServer, die_with_parent

PAYLOAD = orjson.dumps({"id": 123456, "event": "Opening Ceremony", "qty": 2, "cost": 123.45, "x": "ab"})
BATCH = 100


# -- the consumer (a child process) ------------------------------------------------------------


def consume(url: str, n: int, history: int, out: str) -> None:
    from eventbus import Context, Message, Runner, on

    times: list[float] = []
    cpu: list[float] = []  # the process's CPU time at the first and the last message
    done = asyncio.Event()

    async def handle(msg: Message, ctx: Context) -> None:
        orjson.loads(msg.data)
        times.append(time.perf_counter())
        if len(times) == 1:
            cpu.append(time.process_time())
        if len(times) >= n:
            cpu.append(time.process_time())
            done.set()

    channel: Any = "bench"
    if history:
        from eventbus import Channel

        channel = Channel("bench", history=history)
    handler = on(channel)(handle)

    async def main() -> int:
        async with Runner([handler], url=url, log_level="WARNING") as runner:
            await asyncio.to_thread(Path(out + ".ready").write_text, "1")
            await done.wait()
            return sum(s.recovered for s in getattr(runner.stats, "channels", {}).values())

    recovered = asyncio.run(main())
    result = {"times": [times[0], times[-1]], "cpu": cpu, "recovered": recovered, "all": times}
    Path(out).write_text(json.dumps(result))


# -- the measurements -------------------------------------------------------------------------


def start_consumer(url: str, n: int, history: int, baseline: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """The consumer, on this checkout's eventbus, or on ``baseline``'s (its .venv and sources)."""
    out = tempfile.mktemp(prefix="eventbus-recovery-bench-")
    root = str(Path(__file__).resolve().parent.parent)
    python, env = sys.executable, {**os.environ, "PYTHONPATH": root}
    if baseline is not None:
        python = f"{baseline}/.venv/bin/python"
        env["PYTHONPATH"] = f"{baseline}{os.pathsep}{root}"
    process = subprocess.Popen(
        [python, str(Path(__file__).resolve()), "--consume", url, str(n), str(history), out],
        preexec_fn=die_with_parent,
        env=env,
        cwd=baseline or root,
    )
    while not os.path.exists(out + ".ready"):
        if process.poll() is not None:
            raise RuntimeError("the consumer exited before it was ready")
        time.sleep(0.02)
    return process, out


def wait_result(process: subprocess.Popen[bytes], out: str, timeout: float = 300) -> dict[str, object]:
    process.wait(timeout)
    result: dict[str, object] = json.loads(Path(out).read_text())
    for path in (out, out + ".ready"):
        Path(path).unlink(missing_ok=True)
    return result


async def publish_all(url: str, n: int, history: int) -> float:
    from eventbus import Channel, connect

    channel = Channel("bench", history=history) if history else "bench"
    async with connect(url) as bus:
        await bus.publish(channel, PAYLOAD)  # the script loaded, the connections open
        began = time.perf_counter()
        for _ in range(n // BATCH):
            await asyncio.gather(*(bus.publish(channel, PAYLOAD) for _ in range(BATCH)))
        return (n // BATCH) * BATCH / (time.perf_counter() - began)


def drain(n: int, history: int, baseline: str | None = None) -> float:
    return drain_rates(n, history, baseline)[0]


def drain_rates(n: int, history: int, baseline: str | None = None) -> tuple[float, float]:
    """Messages per second of the drain, and per second of the consumer's CPU time (which the
    other processes on the machine disturb less than the wall clock)."""
    with RedisServer() as server:
        server.unlimited_pubsub_buffers()
        process, out = start_consumer(server.url, n, history, baseline)
        os.kill(process.pid, signal.SIGSTOP)
        asyncio.run(publish_all(server.url, n, history))
        os.kill(process.pid, signal.SIGCONT)
        result = wait_result(process, out)
        times, cpu = result["times"], result["cpu"]
        assert isinstance(times, list) and isinstance(cpu, list)
        return n / (times[1] - times[0]), n / (cpu[1] - cpu[0])


def replay(n: int) -> tuple[float, int]:
    with RedisServer() as server:
        process, out = start_consumer(server.url, n, n)
        with server.client() as c:
            c.call("CONFIG", "SET", "client-output-buffer-limit", "pubsub 256kb 0 0")
        os.kill(process.pid, signal.SIGSTOP)
        asyncio.run(publish_all(server.url, n, n))
        os.kill(process.pid, signal.SIGCONT)
        result = wait_result(process, out)
        recovered = result["recovered"]
        times = result["all"]
        assert isinstance(recovered, int) and isinstance(times, list)
        # The last `recovered` messages came from the history (those before arrived live).
        window = times[-recovered:]
        return (len(window) - 1) / (window[-1] - window[0]), recovered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200_000)
    parser.add_argument("--replay", type=int, default=100_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--baseline",
        metavar="DIR",
        help="only the plain drain, this checkout against DIR's (a checkout with its own .venv), interleaved",
    )
    parser.add_argument("--consume", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.consume:
        url, n, history, out = args.consume
        consume(url, int(n), int(history), out)
        return
    if args.baseline:
        before, after = [], []
        for rep in range(args.reps):
            before.append(drain(args.n, 0, args.baseline))
            after.append(drain(args.n, 0))
            print(f"rep {rep + 1}: baseline {before[-1]:,.0f}/s, this checkout {after[-1]:,.0f}/s", flush=True)
        b, a = statistics.median(before), statistics.median(after)
        print(f"| plain drain of {args.n:,} (msg/s) | {b:,.0f} | {a:,.0f} | {a / b:.2f}x |")
        return
    names = ("pub_plain", "pub_rec", "drain_plain", "drain_rec", "cpu_plain", "cpu_rec", "replay")
    figures: dict[str, list[float]] = {k: [] for k in names}
    recovered = []
    for rep in range(args.reps):
        with RedisServer() as server:
            figures["pub_plain"].append(asyncio.run(publish_all(server.url, args.n // 2, 0)))
        with RedisServer() as server:
            figures["pub_rec"].append(asyncio.run(publish_all(server.url, args.n // 2, 10_000)))
        for kind, history in (("plain", 0), ("rec", 10_000)):
            wall, cpu = drain_rates(args.n, history)
            figures[f"drain_{kind}"].append(wall)
            figures[f"cpu_{kind}"].append(cpu)
        rate, count = replay(args.replay)
        figures["replay"].append(rate)
        recovered.append(count)
        print(f"rep {rep + 1}: " + ", ".join(f"{k}={v[-1]:,.0f}/s" for k, v in figures.items()), flush=True)
    med = {k: statistics.median(v) for k, v in figures.items()}
    print()
    print("| figure | plain | recoverable | ratio | target |")
    print("| --- | --- | --- | --- | --- |")
    print(
        f"| publish, 100 in flight (msg/s) | {med['pub_plain']:,.0f} | {med['pub_rec']:,.0f} "
        f"| {med['pub_rec'] / med['pub_plain']:.2f}x | >= 0.5x |"
    )
    print(
        f"| drain of {args.n:,} (msg/s) | {med['drain_plain']:,.0f} | {med['drain_rec']:,.0f} "
        f"| {med['drain_rec'] / med['drain_plain']:.2f}x | >= 0.9x |"
    )
    print(
        f"| the same drain per second of the consumer's CPU (msg/s) | {med['cpu_plain']:,.0f} "
        f"| {med['cpu_rec']:,.0f} | {med['cpu_rec'] / med['cpu_plain']:.2f}x | >= 0.9x |"
    )
    print(
        f"| replay of {args.replay:,} missed (msg/s; {min(recovered):,}-{max(recovered):,} read from the history) "
        f"| {med['drain_plain']:,.0f} (live drain) | {med['replay']:,.0f} | {med['replay'] / med['drain_rec']:.2f}x "
        "of the recoverable live drain | >= 1x |"
    )


if __name__ == "__main__":
    main()
