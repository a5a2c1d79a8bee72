"""Publish N messages through a client API, one at a time or in bursts; print messages per second.

Usage: python -m benchmarks.publishers.publish {eventbus,redis} {one,burst} URL N
The connection is opened and warmed with a few publishes before the clock starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from benchmarks.workloads import json_payload

CHANNEL = "publish-bench"
BURST = 100

Publish = Callable[[str, bytes], Awaitable[object]]


@contextlib.asynccontextmanager
async def client(lib: str, url: str) -> AsyncIterator[Publish]:
    if lib == "eventbus":
        import eventbus

        async with eventbus.connect(url=url) as bus:
            yield bus.publish
    else:
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(url)
        try:
            yield r.publish
        finally:
            await r.aclose()


async def main() -> None:
    lib, mode, url, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    payload = json_payload(0)
    async with client(lib, url) as publish:
        await asyncio.gather(*(publish(CHANNEL, payload) for _ in range(BURST)))  # warm the pool
        start = time.perf_counter()
        if mode == "one":
            for _ in range(n):
                await publish(CHANNEL, payload)
        else:
            for _ in range(n // BURST):
                await asyncio.gather(*(publish(CHANNEL, payload) for _ in range(BURST)))
        elapsed = time.perf_counter() - start
    sent = n if mode == "one" else n // BURST * BURST
    print(json.dumps({"sent": sent, "elapsed_s": elapsed, "rate": sent / elapsed}))


if __name__ == "__main__":
    asyncio.run(main())
