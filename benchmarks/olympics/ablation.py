"""Where the olympics listeners' CPU goes per purchase (issue 15): the app beside variants that do less.

    python -m benchmarks.olympics.ablation [--variants noop,rawread,read,lean,tuned,full] [--n 5000] [--reps 5]
    python -m benchmarks.olympics.ablation --micro [sleep0,hgetall,sadd,pipe1,pipe3] [--micro-n 20000] [--reps 5]

Each variant has the app's five listeners on the app's subscriptions, with the app's options, and
adds one thing to the one before; each runs through :func:`benchmarks.olympics.roundtrips.one_run`
(the in-process drain: the backlog is published while the loop is blocked, then the clock and
``process_time`` run until every listener is done). Printed: medians of CPU µs per purchase,
purchases/s, redis-server CPU, commands and round trips per purchase, and whether the final state
was exact (only ``lean``, ``tuned`` and ``full`` write it).

- ``noop``: the handlers return at once (reading, routing, the workers);
- ``rawread``: each awaits ``ctx.redis.hgetall`` of the order;
- ``read``: each calls the app's ``load_order`` (key name, WRONGTYPE guard, parse, checks);
- ``lean``: the app's exact Redis commands with the least Python around them (no checks, no
  alerts), which leaves the exact final state;
- ``tuned``: the listeners tuned per message as the app shipped them before batch handlers
  (:mod:`benchmarks.olympics.tuned`);
- ``full``: ``apps.olympics`` itself, as a user writes it.

``--micro`` times the command client alone: 16 callers on one lane, CPU µs per ``await`` of a
``sleep(0)``, ``hgetall``, ``sadd`` and plain pipelines of 1 and 3 commands. For instruction
counts, run one operation under callgrind at two sizes and divide the difference (start-up
cancels out): ``valgrind --tool=callgrind python -m benchmarks.olympics.ablation --micro pipe3
--micro-n 8000 --reps 1``, the same with ``--micro-n 800``, (Ir difference) / 7200.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import types
from typing import Any

from apps.olympics.keys import CEREMONY_PATTERN, OPENING_CEREMONY, ORDERS_CHANNEL, event_channel
from benchmarks.olympics import roundtrips
from benchmarks.olympics.tuned import OPTIONS, load_order
from benchmarks.redisproc import RedisServer
from eventbus import Context, Message, on, on_pattern
from eventbus._backends.autopipeline import autopipeline_client

VARIANTS = ("noop", "rawread", "read", "lean", "tuned", "full")
MICRO = ("sleep0", "hgetall", "sadd", "pipe1", "pipe3")
LISTENERS = ("sales_analytics", "events_analytics", "customer_purchases", "opening_ceremony_alerter")


async def _decoded(msg: Message, ctx: Context) -> dict[str, str]:
    raw = await ctx.redis.hgetall("purchase_order_details:" + msg.text)
    return {k.decode(): v.decode() for k, v in raw.items()}


async def _lean_sales(msg: Message, ctx: Context) -> None:
    o = await _decoded(msg, ctx)
    hour, qty = f"#{int(o['ts']) % 86400 // 3600}", int(o["qty"])
    pipe = ctx.redis.pipeline(transaction=False)
    for key in ("sales_histogram:time_of_day", "sales_histogram:time_of_day:" + o["event"]):
        pipe.execute_command("BITFIELD", key, "OVERFLOW", "SAT", "INCRBY", "u32", hour, qty)
    await pipe.execute()


async def _lean_events(msg: Message, ctx: Context) -> None:
    o = await _decoded(msg, ctx)
    pipe = ctx.redis.pipeline(transaction=False)
    pipe.sadd("sales:" + o["event"], msg.text)
    pipe.hincrbyfloat("sales_summary", o["event"] + ":total_sales", float(o["cost"]))
    pipe.hincrby("sales_summary", o["event"] + ":total_tickets_sold", int(o["qty"]))
    await pipe.execute()


async def _lean_customer(msg: Message, ctx: Context) -> None:
    o = await _decoded(msg, ctx)
    await ctx.redis.sadd("invoices:" + o["who"], msg.text)


def _body(variant: str, name: str) -> Any:
    """The handler ``name`` of ``variant`` (a new function per listener: eventbus keys handlers by function)."""

    async def noop(msg: Message, ctx: Context) -> None:
        return None

    async def rawread(msg: Message, ctx: Context) -> None:
        await ctx.redis.hgetall("purchase_order_details:" + msg.text)

    async def read(msg: Message, ctx: Context) -> None:
        await load_order(msg, ctx)

    async def lean_alert(msg: Message, ctx: Context) -> None:
        await _decoded(msg, ctx)

    if variant == "lean":
        lean = {"sales_analytics": _lean_sales, "events_analytics": _lean_events, "customer_purchases": _lean_customer}
        chosen = lean.get(name, lean_alert)
    else:
        chosen = {"noop": noop, "rawread": rawread, "read": read}[variant]

    async def handler(msg: Message, ctx: Context) -> None:
        await chosen(msg, ctx)

    handler.__name__ = handler.__qualname__ = name
    return handler


def variant_module(variant: str) -> str:
    """Register the variant's listeners as a module; its name, for ``roundtrips.APP``."""
    if variant == "full":
        return "apps.olympics"
    if variant == "tuned":
        return "benchmarks.olympics.tuned"
    name = f"{__name__}_{variant}"
    module = types.ModuleType(name)
    for listener in LISTENERS[:3]:
        setattr(module, listener, on(ORDERS_CHANNEL, **OPTIONS)(_body(variant, listener)))
    exact = on(event_channel(OPENING_CEREMONY), **OPTIONS)(_body(variant, "opening_ceremony_alerter"))
    module.opening_ceremony_alerter = exact  # type: ignore[attr-defined]
    module.ceremony_alerter = on_pattern(CEREMONY_PATTERN, **OPTIONS)(_body(variant, "ceremony_alerter"))  # type: ignore[attr-defined]
    sys.modules[name] = module
    return name


async def _micro(port: int, op: str, n: int = 20000, callers: int = 16) -> float:
    """CPU µs per operation ``op`` of ``callers`` concurrent callers on one auto-pipelining client."""
    r = autopipeline_client(f"redis://127.0.0.1:{port}")
    await r.hset("o:1", mapping={"who": "a", "event": "b", "qty": 1, "cost": 2, "ts": 3})

    async def caller() -> None:
        for i in range(n // callers):
            if op == "sleep0":
                await asyncio.sleep(0)
            elif op == "hgetall":
                await r.hgetall("o:1")
            elif op == "sadd":
                await r.sadd("s:x", i)
            else:
                pipe = r.pipeline(transaction=False)
                pipe.sadd("s:x", i)
                if op == "pipe3":
                    pipe.hincrbyfloat("h", "a", 1.5).hincrby("h", "b", 2)
                await pipe.execute()

    cpu = time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    cpu = time.process_time() - cpu
    await r.aclose()
    return cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--micro", nargs="?", const=",".join(MICRO), help="time the command client alone")
    parser.add_argument("--micro-n", type=int, default=20000, help="operations per --micro run")
    args = parser.parse_args()
    if args.micro:
        with RedisServer() as server:
            for op in args.micro.split(","):
                runs = [asyncio.run(_micro(server.port, op, args.micro_n)) for _ in range(args.reps)]
                each = ", ".join(f"{x:.2f}" for x in runs)
                print(f"{op:8} CPU µs per operation {statistics.median(runs):6.2f}  (runs: {each})")
        return
    os.environ["OLYMPICS_SIMULATE"] = "0"
    sys.stdout, out = open(os.devnull, "w"), sys.stdout  # noqa: SIM115 - the alerts are discarded
    variants = args.variants.split(",")
    results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for _ in range(args.reps):  # interleaved, so a change of load hits every variant alike
        for v in variants:
            roundtrips.APP = variant_module(v)
            results[v].append(asyncio.run(roundtrips.one_run(args.n)))
    print(f"{args.reps} runs of {args.n} purchases per variant, Python {sys.version.split()[0]}; medians:", file=out)
    for v, runs in results.items():

        def med(key: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(
            f"  {v:8} CPU µs {med('cpu_us'):6.1f}  purchases/s {med('purchases_per_s'):8.0f}  "
            f"redis CPU µs {med('redis_cpu_us'):5.1f}  commands {med('commands'):5.2f}  "
            f"round trips {med('round_trips'):.3f}  exact {min(r['exact'] for r in runs):.0f}",
            file=out,
        )


if __name__ == "__main__":
    main()
