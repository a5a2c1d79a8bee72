"""What the app created, so that ``reset`` deletes that and nothing else.

The simulator invents data. Before posting, it records in the set ``<prefix>olympics:created``
the name of every key its purchases will make (the order hashes, the event hashes, and the sets,
totals and histograms the listeners will write) *that does not exist yet*. A key that was there
before - the user's own, or the tutorial's data written by a real producer - is never recorded,
so ``reset`` never deletes it. Registering up front, on the producer side, keeps the listeners'
hot path free of bookkeeping; the listeners only ever write keys derived from the orders.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from apps.olympics.keys import Keys
from apps.olympics.orders import Order

CHUNK = 1_000  # names per round trip: bounded pipelines for a simulation of any size


def keys_written_for(keys: Keys, orders: Sequence[Order], events: Iterable[str]) -> list[str]:
    """Every key that creating ``events`` and posting ``orders`` writes, listeners included."""
    names = {keys.events, keys.sales_summary, keys.histogram}
    for event in events:
        names.update((keys.event(event), keys.sales(event), keys.event_histogram(event)))
    for order in orders:
        names.update((keys.order(order.id), keys.sales(order.event), keys.event_histogram(order.event)))
        names.add(keys.invoices(order.who))
    return sorted(names)


async def track_new(redis: Any, keys: Keys, names: Sequence[str]) -> int:
    """Record the names in ``names`` that do not exist yet as created by the app; returns how many."""
    recorded = 0
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        pipe = redis.pipeline(transaction=False)
        for name in chunk:
            pipe.exists(name)
        exists = await pipe.execute()
        new = [name for name, found in zip(chunk, exists, strict=True) if not int(found)]
        if new:
            recorded += int(await redis.sadd(keys.created, *new))
    return recorded


async def tracked(redis: Any, keys: Keys) -> list[str]:
    """The names recorded as created by the app that still exist, plus the record itself."""
    names = sorted({_text(name) async for name in redis.sscan_iter(keys.created, count=CHUNK)})
    existing: list[str] = []
    for start in range(0, len(names), CHUNK):
        chunk = names[start : start + CHUNK]
        pipe = redis.pipeline(transaction=False)
        for name in chunk:
            pipe.exists(name)
        existing += [name for name, found in zip(chunk, await pipe.execute(), strict=True) if int(found)]
    # Not recorded, but the app's all the same: the record itself, the marker, and the dead letters
    # of a run under a prefix (its own stream).
    for extra in (keys.created, keys.throwaway_marker, keys.dead_letters):
        if extra is not None and int(await redis.exists(extra)):
            existing.append(extra)
    return existing


async def delete(redis: Any, names: Sequence[str]) -> int:
    deleted = 0
    for start in range(0, len(names), CHUNK):
        deleted += int(await redis.delete(*names[start : start + CHUNK]))
    return deleted


async def delete_tracked(redis: Any, keys: Keys) -> int:
    """Delete everything the app recorded as created under ``keys`` (and the record)."""
    return await delete(redis, await tracked(redis, keys))


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
