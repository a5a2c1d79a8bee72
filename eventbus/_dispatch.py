"""Routing: from what Redis reports to the inboxes of the handlers that subscribed.

Redis tells us which subscription a message came through (``message`` carries the channel,
``pmessage`` the pattern), so routing is one dict lookup however many subscriptions exist.
A message matching a channel and a pattern subscription arrives twice and is routed twice.

A payload whose first byte is NUL may carry one of eventbus's envelopes (both start ``\x00EB``):
a recoverable channel's (eventbus._history), which goes to :class:`~eventbus._recovery.Recovery`
to track its offset, or a request's (eventbus._envelope, :func:`read_message`); a plain message
costs one more byte compare. Replies arrive on the process's reply channel, which no handler
subscribes to: looked up only when the channel has no route.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from mypy_extensions import i64

from eventbus._envelope import read_message
from eventbus._message import Message, Position
from eventbus._names import decode_name, encode_name
from eventbus._recovery import CHANNEL, PATTERN, SHARDED, Recovery
from eventbus._stats import BusStats
from eventbus._subscription import Subscription
from eventbus._worker import HandlerWorker

# (name, the subscribed workers, subscribed as a recoverable Channel)
Route = tuple[str, tuple[HandlerWorker, ...], bool]


class Dispatcher:
    """Maps subscriptions to workers and feeds raw push replies to them."""

    def __init__(self, stats: BusStats, max_payload: int | None = None, recovery: Recovery | None = None) -> None:
        self.stats = stats
        self.max_payload = max_payload
        self.recovery = recovery
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
            name, workers, declared = table.get(key, (subscription.name, (), False))
            if worker not in workers:
                workers = (*workers, worker)
            table[key] = (name, workers, declared or subscription.recoverable)
        if self.recovery is not None:
            for kind, table in tables.items():
                for name, workers, declared in table.values():
                    if kind == "pattern":
                        self.recovery.declare_pattern(name, workers)
                    elif declared:
                        self.recovery.declare(kind, name, workers)

    def consume(self, reader: Any) -> list[Any]:
        """Parse and route every complete reply buffered in a hiredis ``reader``.

        The subscription connection's hot path: one call per socket read instead of one per
        message. Returns the replies that are not messages (subscribe confirmations, PONG,
        errors) for the connection to match with its pending commands.
        """
        others: list[Any] = []
        channels, patterns, sharded, cap = self.channels, self.patterns, self.sharded, self.max_payload
        recovery = self.recovery
        # The recoverable channels' positions, by channel (empty dicts: no recovery).
        by_channel: dict[bytes, Position] = recovery.by_channel if recovery is not None else {}
        by_sharded: dict[bytes, Position] = recovery.by_sharded if recovery is not None else {}
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
                    if (route[2] or (data and data[0] == 0)) and recovery is not None:
                        payload = _in_order(by_channel.get(items[1]), data)
                        if payload is None:
                            if recovery.accept(CHANNEL, b"", items[1], route[0], None, data, route[1], route[2]):
                                routed += 1
                                continue
                        else:
                            data = payload
                    # A first byte of 0: perhaps a request (eventbus._envelope); one comparison for the rest.
                    msg = read_message(route[0], data, None) if data and data[0] == 0 else Message(route[0], data, None)
                elif kind == b"pmessage":
                    route = patterns.get(items[1])
                    if route is None:
                        unrouted += 1
                        continue
                    data = items[3]
                    if data and data[0] == 0 and recovery is not None:
                        name = decode_name(items[2])
                        if recovery.accept(PATTERN, items[1], items[2], name, route[0], data, route[1], False):
                            routed += 1
                            continue
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
                    if (route[2] or (data and data[0] == 0)) and recovery is not None:
                        payload = _in_order(by_sharded.get(items[1]), data)
                        if payload is None:
                            if recovery.accept(SHARDED, b"", items[1], route[0], None, data, route[1], route[2]):
                                routed += 1
                                continue
                        else:
                            data = payload
                    # A first byte of 0: perhaps a request (eventbus._envelope); one comparison for the rest.
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


def _in_order(track: Position | None, data: bytes) -> bytes | None:
    """The payload of a recoverable channel's message that is simply the next one (the common
    case, kept here on the compiled path); None: anything else, for Recovery.accept to handle.

    Parsed byte by byte: compiled, each index is a C operation, where ``find``, ``int`` and slices
    would each be a call and an allocation; the indexes and bytes are ``i64`` (machine
    integers), which spares each step mypyc's checks for big ints (benchmarks/PROFILE.md).
    """
    if track is None or track.buffer is not None:
        return None
    epoch = track.epoch
    if epoch is None:
        return None
    size: i64 = len(data)
    if size < 7 or data[1] != 69 or data[2] != 66:  # b"\x00EB"
        return None
    offset = 0  # an int like Position.last: their compare cannot overflow
    i: i64 = 3
    c: i64
    while i < size:
        c = data[i]
        if c == 58:  # ":"
            break
        if c < 48 or c > 57 or i > 22:
            return None
        offset = offset * 10 + int(c - 48)
        i += 1
    if i == 3 or offset != track.last + 1:
        return None
    width: i64 = len(epoch)
    start: i64 = i + 1
    end: i64 = start + width
    if end >= size or data[end] != 58:
        return None
    j: i64 = 0
    while j < width:
        if data[start + j] != epoch[j]:
            return None
        j += 1
    track.last = offset
    return data[end + 1 :]


def deliver_payloads(
    workers: tuple[HandlerWorker, ...], channel: str, pattern: str | None, payloads: list[bytes], cap: int | None
) -> None:
    """Hand a run of payloads of one channel (a replay from its history) to its workers, on the
    compiled path: a replay must run at least as fast as live messages do."""
    payload: bytes
    for payload in payloads:
        msg = Message(channel, payload, pattern)
        if cap is not None and len(payload) > cap:
            for worker in workers:
                worker.refuse(msg, f"payload of {len(payload)} bytes exceeds the cap of {cap}")
            continue
        for worker in workers:
            worker.put(msg)
