"""The one-command demo: ``python -m eventbus run apps.olympics`` simulates a day of sales.

A startup hook starts the simulator as a background task that publishes through the app's own
connection; the listeners print alerts as the purchases flow; once every purchase has been
processed the task prints the report, and the app goes on listening until Ctrl-C.

Environment: ``OLYMPICS_SIMULATE`` purchases to simulate (default 300; 0 turns the demo off, for
running the listeners alone), ``OLYMPICS_RATE`` purchases per second (default 30; 0 = as fast as
possible), ``OLYMPICS_SEED`` to replay the same purchases (default: a random seed, printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from apps.olympics.keys import OPENING_CEREMONY, ORDERS_CHANNEL, event_channel
from apps.olympics.listeners import (
    ceremony_alerter,
    customer_purchases,
    events_analytics,
    opening_ceremony_alerter,
    sales_analytics,
)
from apps.olympics.orders import Order
from apps.olympics.producer import wait_for_listeners
from apps.olympics.report import load_report, render_report
from apps.olympics.simulator import create_events, generate_orders, simulate
from eventbus import ConfigError, Context, HandlerStats, on_shutdown, on_startup

DEFAULT_COUNT = 300
DEFAULT_RATE = 30.0
TASK = "olympics.simulator"  # key of the background task in ctx.state
SUBSCRIBE_WAIT = 10.0
QUIET = 0.5  # seconds without a new delivery after which the listeners are considered done


@dataclass(frozen=True, slots=True)
class DemoSettings:
    count: int
    rate: float
    seed: int | None

    @classmethod
    def from_env(cls) -> DemoSettings:
        count = _env_number("OLYMPICS_SIMULATE", DEFAULT_COUNT, int)
        rate = _env_number("OLYMPICS_RATE", DEFAULT_RATE, float)
        seed_text = os.environ.get("OLYMPICS_SEED", "").strip()
        seed = _env_number("OLYMPICS_SEED", 0, int) if seed_text else None
        return cls(int(count), float(rate), None if seed is None else int(seed))


def _env_number(name: str, default: float, kind: type[int] | type[float]) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {text!r}") from None
    if value < 0:
        raise ConfigError(f"{name} must be >= 0, got {text!r}")
    return value


@on_startup
async def start_simulation(ctx: Context) -> None:
    settings = DemoSettings.from_env()
    if settings.count == 0:
        ctx.log.info("OLYMPICS_SIMULATE=0: listening only; post purchases with: python -m apps.olympics simulate")
        return
    ctx.state[TASK] = asyncio.create_task(run_demo(ctx, settings), name="olympics:simulator")


@on_shutdown
async def stop_simulation(ctx: Context) -> None:
    task: asyncio.Task[None] | None = ctx.state.pop(TASK, None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task])  # not `await task`: its CancelledError is not ours to raise


async def run_demo(ctx: Context, settings: DemoSettings) -> None:
    demo = asyncio.ensure_future(_run_demo(ctx, settings))
    stopping = asyncio.ensure_future(ctx.stopping.wait())
    try:
        # Stop posting as soon as the runner stops reading (Ctrl-C): purchases posted during its
        # grace period would be stored but never reach the listeners.
        await asyncio.wait([demo, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not demo.done():
            demo.cancel()
            await asyncio.wait([demo])
            ctx.log.info("the simulation stopped with the app")
            return
        demo.result()
    except asyncio.CancelledError:
        demo.cancel()
        raise
    except Exception:
        # A background task's failure would otherwise surface only when the task is collected.
        ctx.log.exception("the olympics simulation failed; the listeners keep running")
    finally:
        stopping.cancel()


async def _run_demo(ctx: Context, settings: DemoSettings) -> None:
    # The hook runs before the runner subscribes: publishing now would reach nobody.
    channels = (ORDERS_CHANNEL, event_channel(OPENING_CEREMONY))
    if not await wait_for_listeners(ctx.redis, SUBSCRIBE_WAIT, channels=channels, patterns=1):
        ctx.log.warning("the listeners are not subscribed after %.0fs; simulating anyway", SUBSCRIBE_WAIT)
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(1_000_000)
    orders = generate_orders(settings.count, seed)
    pace = f"{settings.rate:g} a second" if settings.rate else "as fast as possible"
    print(
        f"Simulating {settings.count:,} ticket purchases, {pace} (seed {seed}; replay with OLYMPICS_SEED={seed}).",
        flush=True,
    )
    await create_events(ctx)
    baseline = {name: _counts(ctx.stats.handlers.get(name)) for name in expected_deliveries(())}
    started = time.monotonic()
    await simulate(ctx, orders, rate=settings.rate)
    posted_in = time.monotonic() - started
    await _wait_until_processed(ctx, baseline, expected_deliveries(orders))
    report = await load_report(ctx.redis)
    print()
    print(render_report(report))
    print(
        f"\nPosted {len(orders):,} purchases in {posted_in:.1f}s. Still listening: post more with "
        f"`python -m apps.olympics simulate --url {_url_of(ctx.redis)}`, or press Ctrl-C to stop.",
        flush=True,
    )


def _url_of(redis: Any) -> str:
    """Where the app's client is connected, for the hint; "URL" when it cannot be told safely."""
    pool = getattr(redis, "connection_pool", None)
    kwargs = getattr(pool, "connection_kwargs", None)
    if not isinstance(kwargs, dict) or kwargs.get("password") or "host" not in kwargs:
        return "URL"
    scheme = "rediss" if "SSL" in getattr(getattr(pool, "connection_class", None), "__name__", "") else "redis"
    return f"{scheme}://{kwargs['host']}:{kwargs.get('port', 6379)}/{kwargs.get('db', 0)}"


def expected_deliveries(orders: Sequence[Order]) -> dict[str, int]:
    """How many messages each listener gets for ``orders`` (Redis delivery semantics)."""
    opening = sum(1 for o in orders if o.event == OPENING_CEREMONY)
    # "purchase_orders:* Ceremony" matches the channel of any event whose name ends in " Ceremony".
    ceremonies = sum(1 for o in orders if o.event.endswith(" Ceremony"))
    return {
        sales_analytics.__name__: len(orders),
        events_analytics.__name__: len(orders),
        customer_purchases.__name__: len(orders),
        opening_ceremony_alerter.__name__: opening,
        ceremony_alerter.__name__: ceremonies,
    }


def _counts(stats: HandlerStats | None) -> tuple[int, int]:
    """(received, finished) for one handler: finished counts every way a message can end."""
    if stats is None:
        return (0, 0)
    finished = stats.handled + stats.failed + stats.rejected + stats.dropped + stats.abandoned
    return (stats.received, finished)


async def _wait_until_processed(ctx: Context, baseline: dict[str, tuple[int, int]], expected: dict[str, int]) -> None:
    """Until every listener has finished what this run sent it.

    Normally each listener's count reaches what the orders imply. When it cannot (another
    process shares the listeners' work, or a subscription was late), fall back to: everything
    received is finished and nothing new has arrived for QUIET seconds.
    """
    last: dict[str, tuple[int, int]] = {}
    quiet_since = time.monotonic()
    while True:
        now = {name: _counts(ctx.stats.handlers.get(name)) for name in expected}
        settled = all(received == finished for received, finished in now.values())
        complete = all(now[name][1] - baseline[name][1] >= count for name, count in expected.items())
        if settled and complete:
            return
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif settled and time.monotonic() - quiet_since >= QUIET:
            ctx.log.warning("not every purchase reached every listener; reporting what was processed")
            return
        await asyncio.sleep(0.02)
