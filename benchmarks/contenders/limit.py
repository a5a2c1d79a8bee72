"""The Python limit: hiredis parses a raw asyncio socket, each handler is awaited inline.

No library, no queue, no task per message: the least work a Python process can do per message
and still call an ``async def`` handler. It is the yardstick for the framework's own cost.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from urllib.parse import urlparse

import hiredis

from benchmarks.contenders.recorder import Recorder, load, run
from benchmarks.resp import encode


async def main(rec: Recorder) -> None:
    spec = rec.spec
    url = urlparse(spec.url)
    channels = {k.encode(): [rec.async_handler(n) for n in v] for k, v in spec.channel_routes().items()}
    patterns = {k.encode(): [rec.async_handler(n) for n in v] for k, v in spec.pattern_routes().items()}

    loop = asyncio.get_running_loop()
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 6379))
    sock.setblocking(False)
    if channels:
        await loop.sock_sendall(sock, encode("SUBSCRIBE", *channels))
    if patterns:
        await loop.sock_sendall(sock, encode("PSUBSCRIBE", *patterns))

    reader = hiredis.Reader()
    recv = loop.sock_recv
    while True:
        data = await recv(sock, 1 << 18)
        if not data:
            raise ConnectionError("redis closed the subscription connection")
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            kind = reply[0]
            if kind == b"message":
                for h in channels[reply[1]]:
                    await h(reply[2])
            elif kind == b"pmessage":
                for h in patterns[reply[1]]:
                    await h(reply[3])
            # (p)subscribe confirmations need no action: the orchestrator asks Redis itself


if __name__ == "__main__":
    _, recorder = load(sys.argv, "limit")
    run(recorder, lambda: main(recorder))
