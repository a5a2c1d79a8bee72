"""The streams variant under a crash: kill -9 one of three workers mid-sales; every total stays exact."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import redis

from apps.olympics.orders import Order
from apps.olympics_streams.producer import PURCHASES_STREAM, generate_orders, produce
from eventbus import connect
from tests.redis_server import RedisServer

GROUPS = ("sales_analytics", "events_analytics", "customer_purchases", "opening_ceremony_alerter", "ceremony_alerter")
ROOT = Path(__file__).resolve().parents[3]


def expected(orders: list[Order]) -> dict[str, Any]:
    summary: dict[str, float] = defaultdict(float)
    histogram = [0] * 24
    invoices: dict[str, set[str]] = defaultdict(set)
    sales: dict[str, set[str]] = defaultdict(set)
    for o in orders:
        summary[f"{o.event}:total_sales"] += o.cost
        summary[f"{o.event}:total_tickets_sold"] += o.qty
        histogram[time.gmtime(o.ts).tm_hour] += o.qty
        invoices[o.who].add(o.id)
        sales[o.event].add(o.id)
    return {"summary": dict(summary), "histogram": histogram, "invoices": dict(invoices), "sales": dict(sales)}


def actual(client: redis.Redis, orders: list[Order]) -> dict[str, Any]:
    args: list[Any] = []
    for hour in range(24):
        args += ["GET", "u32", f"#{hour}"]
    return {
        "summary": {k.decode(): float(v) for k, v in client.hgetall("sales_summary").items()},
        "histogram": [int(v) for v in client.execute_command("BITFIELD", "sales_histogram:time_of_day", *args)],
        "invoices": {who: {m.decode() for m in client.smembers(f"invoices:{who}")} for who in {o.who for o in orders}},
        "sales": {e: {m.decode() for m in client.smembers(f"sales:{e}")} for e in {o.event for o in orders}},
    }


def consumers(client: redis.Redis, group: str) -> list[str]:
    try:
        return [c["name"].decode() for c in client.xinfo_consumers(PURCHASES_STREAM, group)]
    except redis.ResponseError:
        return []


@pytest.mark.fault
async def test_kill_9_one_of_three_workers_mid_sales(redis_server: RedisServer, subprocess_env: dict[str, str]) -> None:
    orders = generate_orders(3000, seed=7)
    env = dict(subprocess_env, OLYMPICS_STREAMS_CLAIM_IDLE="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    supervisor = subprocess.Popen(  # noqa: ASYNC220 - starting a child is instant; we poll it below
        [sys.executable, "-m", "eventbus", "run", "apps.olympics_streams.listeners", "--workers", "3",
         "--url", redis_server.url, "--grace", "5", "--stats-interval", "0"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    client = redis_server.client()
    try:
        deadline = time.monotonic() + 30
        while not all(len(consumers(client, g)) == 3 for g in GROUPS):
            assert supervisor.poll() is None, supervisor.stderr.read().decode() if supervisor.stderr else ""
            assert time.monotonic() < deadline, "the three workers did not join every group"
            await asyncio.sleep(0.05)
        pids = sorted({int(name.rsplit("-", 1)[1]) for name in consumers(client, "events_analytics")})
        victim = pids[0]

        async with connect(redis_server.url) as bus:
            producing = asyncio.create_task(produce(bus, orders, rate=2000))
            # Kill once about a third of the purchases are in and being worked on.
            while client.xlen(PURCHASES_STREAM) < 1000:  # noqa: ASYNC110 - polling another process's state
                await asyncio.sleep(0.01)
            os.kill(victim, signal.SIGKILL)
            assert await producing == len(orders)

        want = expected(orders)
        deadline = time.monotonic() + 40
        while actual(client, orders) != want:
            assert time.monotonic() < deadline, "totals never became exact"
            await asyncio.sleep(0.2)
        # Nothing left pending in any group, and nothing dead-lettered.
        deadline = time.monotonic() + 20
        while any(client.xpending(PURCHASES_STREAM, g)["pending"] for g in GROUPS):
            assert time.monotonic() < deadline, "entries still pending"
            await asyncio.sleep(0.2)
        assert client.xlen("eventbus:dead-letter") == 0
        await asyncio.sleep(0.5)  # a late duplicate would show up now
        assert actual(client, orders) == want
    finally:
        supervisor.send_signal(signal.SIGTERM)
        try:
            supervisor.wait(30)
        finally:
            if supervisor.poll() is None:
                supervisor.kill()
        client.close()
    log = supervisor.stderr.read().decode() if supervisor.stderr else ""
    assert re.search(rf"worker \d/\d \(pid {victim}\) exited with SIGKILL", log), log[-3000:]
    assert supervisor.returncode == 0, log[-3000:]
    assert "claimed" in log, "no entry was reclaimed: the kill did not exercise XAUTOCLAIM"
