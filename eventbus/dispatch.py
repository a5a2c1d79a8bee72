"""Routing: from what Redis reports to the inboxes of the handlers that subscribed.

Redis tells us which subscription a message came through (``message`` carries the channel,
``pmessage`` the pattern), so routing is one dict lookup however many subscriptions exist.
A message matching a channel and a pattern subscription arrives twice and is routed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from eventbus.message import Message
from eventbus.stats import BusStats
from eventbus.subscription import Subscription
from eventbus.worker import HandlerWorker

log = logging.getLogger("eventbus.dispatch")


def _decode(name: bytes) -> str:
    # Channel names are binary-safe in Redis; keep undecodable bytes recoverable.
    return name.decode("utf-8", "surrogateescape")


class Dispatcher:
    """Maps subscriptions to workers and feeds raw push replies to them."""

    def __init__(self, stats: BusStats, max_payload: int | None = None) -> None:
        self.stats = stats
        self.max_payload = max_payload
        # channel bytes -> (channel as str, workers); pattern bytes -> (pattern as str, workers)
        self.channels: dict[bytes, tuple[str, tuple[HandlerWorker, ...]]] = {}
        self.patterns: dict[bytes, tuple[str, tuple[HandlerWorker, ...]]] = {}
        # Sharded channels are a namespace of their own: PUBLISH x does not reach SSUBSCRIBE x.
        self.sharded: dict[bytes, tuple[str, tuple[HandlerWorker, ...]]] = {}

    def add_routes(self, routes: Iterable[tuple[Subscription, HandlerWorker]]) -> None:
        tables = {"channel": self.channels, "pattern": self.patterns, "sharded": self.sharded}
        for subscription, worker in routes:
            table = tables.get(subscription.kind)
            if table is None:  # streams are read by their own consumers, not the subscription connection
                continue
            key = subscription.name.encode("utf-8", "surrogateescape")
            name, workers = table.get(key, (subscription.name, ()))
            if worker not in workers:
                table[key] = (name, (*workers, worker))

    def feed(self, reply: list[bytes]) -> None:
        """Route one push reply: [b"message", channel, data] or [b"pmessage", pattern, channel, data]."""
        self.stats.messages += 1
        kind = reply[0]
        if kind == b"pmessage":
            route = self.patterns.get(reply[1])
            if route is None:
                self.stats.unrouted += 1
                return
            msg = Message(_decode(reply[2]), reply[3], route[0])
        else:  # b"message", or b"smessage" (sharded)
            route = (self.channels if kind == b"message" else self.sharded).get(reply[1])
            if route is None:
                self.stats.unrouted += 1
                return
            msg = Message(route[0], reply[2])
        if self.max_payload is not None and len(msg.data) > self.max_payload:
            self._oversized(msg, route[1])
            return
        for worker in route[1]:
            worker.put(msg)

    def _oversized(self, msg: Message, workers: tuple[HandlerWorker, ...]) -> None:
        # Refused before any handler decodes it; the workers dead-letter a truncated copy.
        self.stats.oversized += 1
        log.warning(
            "message on %r is %d bytes, over the %d-byte cap: not delivered to %d handler(s)",
            msg.channel,
            len(msg.data),
            self.max_payload,
            len(workers),
        )
        for worker in workers:
            worker.refuse(msg, f"payload of {len(msg.data)} bytes exceeds the cap of {self.max_payload}")
