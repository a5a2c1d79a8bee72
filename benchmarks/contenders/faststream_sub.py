"""FastStream's Redis subscriber, one ``@broker.subscriber`` per handler, logging off.

The handler takes the raw ``RedisMessage`` and decodes ``msg.body`` with orjson itself, so it does
the same work as every other contender (FastStream would otherwise json-decode it on its own).
FastStream opens one pub/sub connection per subscriber and polls it with ``get_message`` and a
sleep; that is its design, measured as is.
"""

from __future__ import annotations

import asyncio
import sys

from faststream.redis import PubSub, RedisBroker
from faststream.redis.annotations import RedisMessage

from benchmarks.contenders.recorder import Body, load


def subscribe(broker: RedisBroker, channel: str, pattern: bool, body: Body) -> None:
    @broker.subscriber(channel=PubSub(channel, pattern=pattern))
    async def handler(msg: RedisMessage) -> None:
        body(msg.body)


async def main() -> None:
    spec, rec = load(sys.argv, "faststream")
    broker = RedisBroker(spec.url, logger=None)
    for h in spec.handlers:
        body = rec.body(h.name)
        for sub in h.subs:
            subscribe(broker, sub, h.kind == "pattern", body)
    await broker.start()
    await asyncio.to_thread(rec.done.wait)
    await broker.stop()


if __name__ == "__main__":
    asyncio.run(main())
