"""The drain method of design.md, shared by the drain, fan-out and many-subscriptions scenarios.

Start the consumer, wait until Redis reports it subscribed, SIGSTOP it, lift the pubsub output-buffer
limit, publish the whole backlog with pipelining, SIGCONT it; the consumer itself times its first to
its last expected handler call. Publisher and consumer never run at the same time, so on two cores
the figure is the consumer's own reading and dispatch speed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from benchmarks.consumer import consumer
from benchmarks.contenders import Contender
from benchmarks.redisproc import RedisServer
from benchmarks.scenarios.base import Measurement
from benchmarks.spec import HandlerDef


def drain(contender: Contender, handlers: list[HandlerDef], commands: Callable[[], Iterable[bytes]]) -> Measurement:
    expected = sum(h.expected for h in handlers)
    with RedisServer() as server:
        server.unlimited_pubsub_buffers()
        with consumer(contender, {"mode": "drain", "handlers": handlers}, server) as c:
            c.wait_subscribed(server)
            with c.paused(), server.client() as pub:
                pub.pipeline(commands())
            # Generous: even FastStream's share should finish well inside this.
            res = c.result(timeout=60 + expected / 2000)
    complete = bool(res["complete"])
    return {
        # A rate over part of the backlog (the rest dropped or lost) is no drain rate: the run shows
        # as incomplete, with its drop count, and has no figure to compare.
        "value": res["rate"] if complete else None,
        "complete": complete,
        "count": res["count"],
        "expected": expected,
        "elapsed_s": res["elapsed_s"],
        "cpu_rate": res["count"] / res["cpu_s"] if complete and res.get("cpu_s") else None,
        "peak_rss_kib": res["peak_rss_kib"],
        "dropped": dropped(res),
        "loop": res.get("loop"),
    }


def dropped(res: dict[str, object]) -> int:
    """Messages eventbus refused by its inbox policy (other contenders have no such counter)."""
    extra = res.get("extra")
    handlers = extra.get("handlers", {}) if isinstance(extra, dict) else {}
    return sum(int(h.get("dropped", 0)) for h in handlers.values() if isinstance(h, dict))
