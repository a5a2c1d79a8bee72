"""The one-command demo: ``python -m eventbus run apps.olympics`` simulates a day of sales.

A startup hook starts the simulator as a background task that publishes through the app's own
connection; the listeners print alerts as the purchases flow; once every purchase has been
processed the task prints the report, and the app goes on listening until Ctrl-C.

The simulator invents purchases, so where it may write them is decided by where Redis came
from (``ctx.server``):

- no URL configured: the demo runs. On a server the runner started (embedded), under the
  tutorial's key names: nothing else lives there. On a server that was already running (the
  local default ``redis://localhost:6379/0``), under the key prefix ``olympics-demo:``, dead
  letters included (the app's own stream, ``olympics-demo:dead-letter``), so the user's keys are
  never touched and ``reset --prefix olympics-demo:`` removes everything; the previous demo run's
  keys there are deleted first, so each report counts one run. It does not simulate if another
  process already listens on ``purchase_orders`` there (those listeners would be sent invented
  orders), and listens under the prefix all the same: a second demo finds the first one's orders
  instead of rejecting them.
- a URL given on purpose (``--url``, ``EVENTBUS_URL``, in code): the app only listens, under the
  tutorial's key names, like a production deployment; the startup line says how to simulate.

Environment: ``OLYMPICS_SIMULATE`` purchases to simulate (unset: 300 when no URL is configured,
none with an explicit URL; a number > 0 asks for a simulation explicitly, isolated under
``olympics-demo:`` unless the server is the run's own; 0 never simulates), ``OLYMPICS_RATE``
purchases per second (default 30; 0 = as fast as possible), ``OLYMPICS_SEED`` to replay the same
purchases (default: a random seed, printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass

from apps.olympics.keys import (
    DEMO_PREFIX,
    OPENING_CEREMONY,
    ORDERS_CHANNEL,
    STATE_KEY,
    TUTORIAL_KEYS,
    Keys,
    event_channel,
)
from apps.olympics.listeners import (
    ceremony_alerter,
    customer_purchases,
    events_analytics,
    opening_ceremony_alerter,
    sales_analytics,
)
from apps.olympics.orders import Order
from apps.olympics.producer import wait_for_listeners
from apps.olympics.registry import delete_tracked
from apps.olympics.report import load_report, render_report
from apps.olympics.simulator import create_events, generate_orders, simulate
from eventbus import ConfigError, Context, HandlerStats, on_shutdown, on_startup

DEFAULT_COUNT = 300
DEFAULT_RATE = 30.0
TASK = "olympics.simulator"  # key of the background task in ctx.state
SUBSCRIBE_WAIT = 10.0
QUIET = 0.5  # seconds without a new delivery after which the listeners are considered done
DEMO_KEYS = Keys(DEMO_PREFIX)


@dataclass(frozen=True, slots=True)
class DemoSettings:
    count: int | None  # None: OLYMPICS_SIMULATE not set, the choice depends on the URL
    rate: float
    seed: int | None

    @classmethod
    def from_env(cls) -> DemoSettings:
        count_text = os.environ.get("OLYMPICS_SIMULATE", "").strip()
        count = int(_env_number("OLYMPICS_SIMULATE", 0, int)) if count_text else None
        rate = _env_number("OLYMPICS_RATE", DEFAULT_RATE, float)
        seed_text = os.environ.get("OLYMPICS_SEED", "").strip()
        seed = _env_number("OLYMPICS_SEED", 0, int) if seed_text else None
        return cls(count, float(rate), None if seed is None else int(seed))


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


def simulate_command(ctx: Context, keys: Keys) -> str:
    """How to post purchases to these listeners from another shell."""
    prefix = f" --prefix {keys.prefix}" if keys.prefix else ""
    return f"python -m apps.olympics simulate --url {ctx.server.url or 'URL'}{prefix}"


@on_startup
async def start_simulation(ctx: Context) -> None:
    settings = DemoSettings.from_env()
    server = ctx.server
    if settings.count == 0:
        say(f"OLYMPICS_SIMULATE=0: listening only. Post purchases with: {simulate_command(ctx, TUTORIAL_KEYS)}")
        return
    if settings.count is None and server.explicit:
        say(
            f"Listening only: the Redis URL was given explicitly ({server.url}, from {server.source}), and the "
            f"demo never writes invented purchases into a database named on purpose. To simulate anyway, set "
            f"OLYMPICS_SIMULATE={DEFAULT_COUNT} (purchases; kept under the key prefix {DEMO_PREFIX!r}), or post "
            f"purchases with: {simulate_command(ctx, TUTORIAL_KEYS)}"
        )
        return
    keys = TUTORIAL_KEYS if server.owned else DEMO_KEYS
    if not server.owned:
        # Everything the demo writes on a server it did not start stays under its prefix, its
        # dead letters included, so that reset removes it all and nothing lands in the user's keys.
        use_keys(ctx, keys)
        # Run before this app subscribes: any subscriber now is another process, and it would
        # receive the invented orders (channels are shared by every database of a server).
        [(_, others)] = await ctx.redis.pubsub_numsub(ORDERS_CHANNEL)
        if int(others) and settings.count is None:
            say(
                f"Listening only: {int(others)} other subscriber(s) already listen on {ORDERS_CHANNEL!r} at "
                f"{server.url} (another demo?), and the demo would send them invented orders. Its listeners work "
                f"{keys.describe()}, so they process the orders posted there with --prefix {keys.prefix} (once per "
                f"running demo: stop one for exact totals). Set OLYMPICS_SIMULATE={DEFAULT_COUNT} to simulate anyway."
            )
            return
        # The prefix is the demo's alone: clearing what its last run created makes every report
        # count one run, and touches nothing else (only keys recorded as created are deleted).
        cleared = await delete_tracked(ctx.redis, keys)
        if cleared:
            ctx.log.info("deleted the previous demo run's %d key(s) %s", cleared, keys.describe())
    else:
        await ctx.redis.set(keys.throwaway_marker, "the demo's server, started by eventbus for one run")
        use_keys(ctx, keys)
    count = settings.count or DEFAULT_COUNT
    ctx.state[TASK] = asyncio.create_task(run_demo(ctx, settings, count, keys), name="olympics:simulator")


def use_keys(ctx: Context, keys: Keys) -> None:
    """Have the listeners use ``keys``, and keep the app's dead letters under their prefix, if any."""
    ctx.state[STATE_KEY] = keys
    if keys.dead_letters is not None and ctx.dead_letters is not None:
        ctx.dead_letters.stream = keys.dead_letters


def say(line: str) -> None:
    # The demo's lines go with its alerts and report on stdout; eventbus logs go to stderr.
    print(line, flush=True)


@on_shutdown
async def stop_simulation(ctx: Context) -> None:
    task: asyncio.Task[None] | None = ctx.state.pop(TASK, None)
    if task is not None and not task.done():
        task.cancel()
        await asyncio.wait([task])  # not `await task`: its CancelledError is not ours to raise


async def run_demo(ctx: Context, settings: DemoSettings, count: int, keys: Keys) -> None:
    demo = asyncio.ensure_future(_run_demo(ctx, settings, count, keys))
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


async def _run_demo(ctx: Context, settings: DemoSettings, count: int, keys: Keys) -> None:
    # The hook runs before the runner subscribes: publishing now would reach nobody.
    channels = (ORDERS_CHANNEL, event_channel(OPENING_CEREMONY))
    if not await wait_for_listeners(ctx.redis, SUBSCRIBE_WAIT, channels=channels, patterns=1):
        ctx.log.warning("the listeners are not subscribed after %.0fs; simulating anyway", SUBSCRIBE_WAIT)
    seed = settings.seed if settings.seed is not None else random.SystemRandom().randrange(1_000_000)
    orders = generate_orders(count, seed)
    pace = f"{settings.rate:g} a second" if settings.rate else "as fast as possible"
    where = "" if ctx.server.owned else f", into {ctx.server.url} {keys.describe()} (your own keys are untouched)"
    say(f"Simulating {count:,} ticket purchases, {pace} (seed {seed}; replay with OLYMPICS_SEED={seed}){where}.")
    await create_events(ctx, keys=keys)
    baseline = {name: _counts(ctx.stats.handlers.get(name)) for name in expected_deliveries(())}
    started = time.monotonic()
    await simulate(ctx, orders, rate=settings.rate, keys=keys)
    posted_in = time.monotonic() - started
    await _wait_until_processed(ctx, baseline, expected_deliveries(orders))
    report = await load_report(ctx.redis, keys)
    say("")
    say(render_report(report))
    say(
        f"\nPosted {len(orders):,} purchases in {posted_in:.1f}s. Still listening: post more with "
        f"`{simulate_command(ctx, keys)}`, or press Ctrl-C to stop."
    )
    if keys.prefix:
        url = ctx.server.url
        say(
            f"The demo's data is in {url} {keys.describe()}. See it again with `python -m apps.olympics report "
            f"--url {url} --prefix {keys.prefix}`; delete it with `python -m apps.olympics reset --url {url} "
            f"--prefix {keys.prefix}` (its dead letters too: `python -m eventbus dead-letters list --url {url} "
            f"--dead-letter-stream {keys.dead_letters}`)."
        )


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
