"""redis.asyncio ``PubSub.run()`` with a handler callback per subscription.

redis-py keeps one callback per channel, so handlers that share a channel share one callback that
awaits each of them in turn.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from benchmarks.contenders.recorder import Recorder, load, run


def callback(handlers: list[Callable[[bytes], Awaitable[None]]]) -> Callable[[dict[str, Any]], Awaitable[None]]:
    if len(handlers) == 1:
        (only,) = handlers

        async def one(message: dict[str, Any]) -> None:
            await only(message["data"])

        return one

    async def many(message: dict[str, Any]) -> None:
        data = message["data"]
        for h in handlers:
            await h(data)

    return many


async def main(rec: Recorder) -> None:
    spec = rec.spec
    client = aioredis.Redis.from_url(spec.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    channels = {k: callback([rec.async_handler(n) for n in v]) for k, v in spec.channel_routes().items()}
    patterns = {k: callback([rec.async_handler(n) for n in v]) for k, v in spec.pattern_routes().items()}
    if channels:
        await pubsub.subscribe(**channels)
    if patterns:
        await pubsub.psubscribe(**patterns)
    await pubsub.run()


if __name__ == "__main__":
    _, recorder = load(sys.argv, "redis_run")
    run(recorder, lambda: main(recorder))
