"""The tutorials' design: one blocking ``listen()`` loop per listener, each in its own thread.

Each handler gets its own thread and its own subscription connection, as the olympics tutorial
starts one ``threading.Thread`` per listener function.
"""

from __future__ import annotations

import sys
import threading

import redis

from benchmarks.contenders.recorder import Body, load
from benchmarks.spec import HandlerDef


def listener(url: str, handler: HandlerDef, body: Body) -> None:
    client = redis.Redis.from_url(url)
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    if handler.kind == "channel":
        pubsub.subscribe(*handler.subs)
    else:
        pubsub.psubscribe(*handler.subs)
    for message in pubsub.listen():
        body(message["data"])


def main() -> None:
    spec, rec = load(sys.argv, "threads")
    threads = [
        threading.Thread(target=listener, args=(spec.url, h, rec.sync_body(h.name)), name=h.name, daemon=True)
        for h in spec.handlers
    ]
    for t in threads:
        t.start()
    rec.done.wait()  # then exit: the listener threads are daemons


if __name__ == "__main__":
    main()
