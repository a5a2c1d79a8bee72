"""redis.asyncio ``PubSub.listen()``: the loop most asyncio code starts from, no dispatch layer."""

from __future__ import annotations

import sys

import redis.asyncio as aioredis

from benchmarks.contenders.recorder import Recorder, load, run


async def main(rec: Recorder) -> None:
    spec = rec.spec
    channels = {k.encode(): [rec.async_handler(n) for n in v] for k, v in spec.channel_routes().items()}
    patterns = {k.encode(): [rec.async_handler(n) for n in v] for k, v in spec.pattern_routes().items()}
    client = aioredis.Redis.from_url(spec.url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    if channels:
        await pubsub.subscribe(*channels)
    if patterns:
        await pubsub.psubscribe(*patterns)
    async for m in pubsub.listen():
        if m["type"] == "message":
            for h in channels[m["channel"]]:
                await h(m["data"])
        elif m["type"] == "pmessage":
            for h in patterns[m["pattern"]]:
                await h(m["data"])


if __name__ == "__main__":
    _, recorder = load(sys.argv, "redis_listen")
    run(recorder, lambda: main(recorder))
