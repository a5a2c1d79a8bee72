"""The sales simulator: a reproducible day of ticket purchases, posted at a chosen rate.

The orders depend on the seed alone (``random.Random(seed)``, no wall clock), so a test can
regenerate them and compute exactly what every listener must have written. Their timestamps
spread over one simulated sales day, 2020-07-24 UTC, following a daily profile, so the
time-of-day histogram has a shape even when the whole run takes a few seconds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from apps.olympics.keys import OPENING_CEREMONY, TUTORIAL_KEYS, Keys
from apps.olympics.orders import Order
from apps.olympics.producer import Bus, create_event, post_purchase
from apps.olympics.registry import keys_written_for, track_new

# The tutorial's four events, with a ticket price each (whole dollars keep HINCRBYFLOAT totals exact).
EVENT_PRICES: dict[str, int] = {
    "Womens Judo": 35,
    "Mens 4x400": 50,
    OPENING_CEREMONY: 120,
    "Closing Ceremony": 90,
}
EVENTS = tuple(EVENT_PRICES)

CUSTOMERS = (
    "Aiko", "Amara", "Bruno", "Chen", "Dara", "Diego", "Elif", "Emma", "Farah", "Grace",
    "Hiro", "Ines", "Jamal", "Jim", "Kai", "Lena", "Liam", "Maya", "Mei", "Nadia",
    "Noah", "Olga", "Omar", "Priya", "Quinn", "Ravi", "Rosa", "Sami", "Sofia", "Tariq",
    "Uma", "Vera", "Wei", "Xavier", "Yara", "Yusuf", "Zane", "Zoe",
)  # fmt: skip

SALES_DAY = 1_595_548_800  # 2020-07-24 00:00:00 UTC, the day the Games were to open
# Relative number of purchases per UTC hour: quiet nights, a lunch bump, a busy evening.
HOURLY_WEIGHTS = (1, 1, 1, 1, 1, 2, 4, 6, 8, 9, 10, 12, 14, 12, 10, 9, 10, 12, 16, 20, 18, 12, 6, 3)
MAX_QTY = 9  # the tutorial buys 1..9 tickets at a time


def generate_orders(n: int, seed: int) -> list[Order]:
    """``n`` orders, identical for the same seed, in timestamp order over the sales day."""
    if n < 0:
        raise ValueError(f"the number of orders must be >= 0, got {n}")
    rng = random.Random(seed)
    # Ids unique within a run and different between seeds, so runs with different seeds add up.
    tag = f"{rng.getrandbits(32):08x}"
    hours = rng.choices(range(24), weights=HOURLY_WEIGHTS, k=n)
    drafts = []
    for hour in hours:
        ts = SALES_DAY + hour * 3_600 + rng.randrange(3_600)
        event = rng.choice(EVENTS)
        qty = rng.randint(1, MAX_QTY)
        who = rng.choice(CUSTOMERS)
        drafts.append((ts, event, qty, who))
    drafts.sort(key=lambda draft: draft[0])
    return [
        Order(f"{tag}-{i:06d}", who, event, qty, float(qty * EVENT_PRICES[event]), ts)
        for i, (ts, event, qty, who) in enumerate(drafts)
    ]


async def create_events(bus: Bus, *, keys: Keys = TUTORIAL_KEYS, track: bool = True) -> None:
    """Create the four events; ``track``: first record the keys this creates (see :func:`simulate`)."""
    if track:
        await track_new(bus.redis, keys, keys_written_for(keys, (), EVENT_PRICES))
    for name, price in EVENT_PRICES.items():
        await create_event(bus, name, price=price, keys=keys)


async def simulate(
    bus: Bus,
    orders: Sequence[Order],
    *,
    rate: float = 0.0,
    concurrency: int = 16,
    on_posted: Callable[[Order], None] | None = None,
    keys: Keys = TUTORIAL_KEYS,
    track: bool = True,
) -> int:
    """Post ``orders`` at ``rate`` per second (0: as fast as Redis takes them); returns how many.

    Up to ``concurrency`` posts are in flight at once, so a high rate is not capped by one
    round trip at a time; order ``i`` is never posted before ``i / rate`` seconds have passed.
    ``track``: first record the keys these orders will create (the events', the orders' and the
    listeners'), so that ``python -m apps.olympics reset`` can delete exactly those.
    """
    if rate < 0:
        raise ValueError(f"rate must be >= 0, got {rate}")
    if track:
        await track_new(bus.redis, keys, keys_written_for(keys, orders, EVENT_PRICES))
    loop = asyncio.get_running_loop()
    start = loop.time()
    items = iter(enumerate(orders))  # shared by the workers: each order is taken once
    posted = 0

    async def worker() -> None:
        nonlocal posted
        for i, order in items:
            if rate > 0:
                delay = start + i / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            await post_purchase(bus, order, keys=keys)
            posted += 1
            if on_posted is not None:
                on_posted(order)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    try:
        await asyncio.gather(*workers)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return posted
