"""Routing: from what Redis reports to the inboxes of the handlers that subscribed.

Redis tells us which subscription a message came through (``message`` carries the channel,
``pmessage`` the pattern), so routing is one dict lookup however many subscriptions exist.
A message matching a channel and a pattern subscription arrives twice and is routed twice.

Requests (:mod:`eventbus._envelope`) arrive on the channels themselves; a payload whose first
byte is 0 is looked at more closely (:func:`read_message`), so a plain message costs one byte
comparison more. Replies arrive on the process's reply channel, which no handler subscribes to:
looked up only when the channel has no route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from eventbus._envelope import read_message
from eventbus._message import Message
from eventbus._names import decode_name, encode_name
from eventbus._stats import BusStats
from eventbus._subscription import Subscription
from eventbus._worker import HandlerWorker

Route = tuple[str, tuple[HandlerWorker, ...]]


class Dispatcher:
    """Maps subscriptions to workers and feeds raw push replies to them."""

    def __init__(self, stats: BusStats, max_payload: int | None = None) -> None:
        self.stats = stats
        self.max_payload = max_payload
        # key bytes -> (name as str, the subscribed workers)
        self.channels: dict[bytes, Route] = {}
        self.patterns: dict[bytes, Route] = {}
        # Sharded channels are a namespace of their own: PUBLISH x does not reach SSUBSCRIBE x.
        self.sharded: dict[bytes, Route] = {}
        # The reply channel(s) of this process's requester: channel -> what takes the payload.
        self.replies: dict[bytes, Callable[[bytes], None]] = {}

    def add_routes(self, routes: Iterable[tuple[Subscription, HandlerWorker]]) -> None:
        tables = {"channel": self.channels, "pattern": self.patterns, "sharded": self.sharded}
        for subscription, worker in routes:
            table = tables.get(subscription.kind)
            if table is None:  # streams are read by their own consumers, not the subscription connection
                continue
            key = encode_name(subscription.name)
            name, workers = table.get(key, (subscription.name, ()))
            if worker not in workers:
                workers = (*workers, worker)
                table[key] = (name, workers)

    def consume(self, reader: Any) -> list[Any]:
        """Parse and route every complete reply buffered in a hiredis ``reader``.

        The subscription connection's hot path: one call per socket read instead of one per
        message. Returns the replies that are not messages (subscribe confirmations, PONG,
        errors) for the connection to match with its pending commands.
        """
        others: list[Any] = []
        channels, patterns, sharded, cap = self.channels, self.patterns, self.sharded, self.max_payload
        routed = unrouted = 0
        gets = reader.gets
        # The annotations below are free in Python; compiled (mypyc), they turn each index, compare
        # and len into a direct C operation instead of a generic protocol call.
        reply: Any
        data: bytes
        try:
            while (reply := gets()) is not False:
                if type(reply) is not list:
                    others.append(reply)
                    continue
                items: list[Any] = reply
                kind: bytes = items[0]
                if kind == b"message":
                    route = channels.get(items[1])
                    if route is None:
                        if not self._reply(items[1], items[2]):
                            unrouted += 1
                        continue
                    data = items[2]
                    # A first byte of 0: perhaps a request (eventbus._envelope); one comparison for the rest.
                    msg = read_message(route[0], data, None) if data and data[0] == 0 else Message(route[0], data, None)
                elif kind == b"pmessage":
                    route = patterns.get(items[1])
                    if route is None:
                        unrouted += 1
                        continue
                    data = items[3]
                    if data and data[0] == 0:
                        msg = read_message(decode_name(items[2]), data, route[0])
                    else:
                        msg = Message(decode_name(items[2]), data, route[0])
                elif kind == b"smessage":
                    route = sharded.get(items[1])
                    if route is None:
                        unrouted += 1
                        continue
                    data = items[2]
                    msg = read_message(route[0], data, None) if data and data[0] == 0 else Message(route[0], data, None)
                else:
                    others.append(reply)
                    continue
                routed += 1
                if cap is not None and len(data) > cap:
                    self._oversized(msg, route[1])
                    continue
                for worker in route[1]:
                    worker.put(msg)
        finally:
            # Counted once per read, not per message.
            self.stats.messages += routed + unrouted
            self.stats.unrouted += unrouted
        return others

    def _reply(self, channel: bytes, data: bytes) -> bool:
        """A message on a channel no handler subscribes to: a reply, if it came on a reply channel."""
        deliver = self.replies.get(channel)
        if deliver is None:
            return False
        deliver(data)
        return True

    def _oversized(self, msg: Message, workers: tuple[HandlerWorker, ...]) -> None:
        # Refused before any handler decodes it; the workers dead-letter a truncated copy and log
        # it within their rate limit (one line here per message would be a flood).
        self.stats.oversized += 1
        for worker in workers:
            worker.refuse(msg, f"payload of {len(msg.data)} bytes exceeds the cap of {self.max_payload}")
