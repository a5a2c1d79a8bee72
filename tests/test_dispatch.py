"""Dispatcher: from the push replies Redis sends (parsed by hiredis) to the subscribed inboxes.

The replies are the bytes a server writes on a subscription connection; the inboxes are
recorders standing in for HandlerWorker's two entry points (``put`` and ``refuse``). The same
routing against real servers is covered by tests/backends/test_conformance.py on every transport.
"""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from eventbus._backends.resp import pack_command
from eventbus._dispatch import Dispatcher
from eventbus._message import Message
from eventbus._stats import BusStats
from eventbus._subscription import Subscription
from eventbus._worker import HandlerWorker


class Inbox(HandlerWorker):
    """A recorder in place of a handler's worker: what the dispatcher hands to ``put`` and ``refuse``."""

    def __init__(self, name: str) -> None:  # no worker state: only the two entry points are used
        self.name = name
        self.got: list[tuple[str, str | None, bytes]] = []
        self.refused: list[tuple[Message, str]] = []

    def put(self, msg: Message) -> None:
        self.got.append((msg.channel, msg.pattern, msg.data))

    def refuse(self, msg: Message, reason: str) -> None:
        self.refused.append((msg, reason))


def push(*parts: bytes) -> bytes:
    """A RESP2 array of bulk strings: what Redis writes for a message, a pmessage, an smessage."""
    return pack_command(*parts)


def dispatcher(routes: list[tuple[Subscription, Any]], max_payload: int | None = None) -> Dispatcher:
    d = Dispatcher(BusStats(), max_payload)
    d.add_routes(routes)
    return d


def consume(d: Dispatcher, data: bytes) -> list[Any]:
    reader = hiredis.Reader()
    reader.feed(data)
    return d.consume(reader)


def test_routes_by_what_redis_reports_and_hands_back_other_replies() -> None:
    exact, pattern, sharded = Inbox("exact"), Inbox("pattern"), Inbox("sharded")
    d = dispatcher(
        [
            (Subscription("channel", "orders:Opening Ceremony"), exact),
            (Subscription("pattern", "orders:* Ceremony"), pattern),
            (Subscription("sharded", "orders:Opening Ceremony"), sharded),
        ]
    )
    data = (
        b"*3\r\n$9\r\nsubscribe\r\n$23\r\norders:Opening Ceremony\r\n:1\r\n"
        + push(b"message", b"orders:Opening Ceremony", b"7")
        + push(b"pmessage", b"orders:* Ceremony", b"orders:Closing Ceremony", b"8")
        + push(b"smessage", b"orders:Opening Ceremony", b"9")
        + b"+PONG\r\n"
    )
    others = consume(d, data)
    assert others == [[b"subscribe", b"orders:Opening Ceremony", 1], b"PONG"]
    assert exact.got == [("orders:Opening Ceremony", None, b"7")]
    assert pattern.got == [("orders:Closing Ceremony", "orders:* Ceremony", b"8")]
    # Sharded channels are a namespace of their own: only the smessage reaches that route.
    assert sharded.got == [("orders:Opening Ceremony", None, b"9")]
    assert d.stats.messages == 3 and d.stats.unrouted == 0


def test_one_message_matching_a_channel_and_a_pattern_is_routed_twice() -> None:
    both = Inbox("both")
    d = dispatcher([(Subscription("channel", "a:b"), both), (Subscription("pattern", "a:*"), both)])
    consume(d, push(b"message", b"a:b", b"x") + push(b"pmessage", b"a:*", b"a:b", b"x"))
    assert both.got == [("a:b", None, b"x"), ("a:b", "a:*", b"x")]


def test_a_worker_routed_twice_to_one_subscription_gets_each_message_once() -> None:
    inbox = Inbox("once")
    d = dispatcher([(Subscription("channel", "c"), inbox), (Subscription("channel", "c"), inbox)])
    consume(d, push(b"message", b"c", b"1"))
    assert inbox.got == [("c", None, b"1")]


def test_fan_out_reaches_every_subscribed_inbox_in_order() -> None:
    first, second = Inbox("first"), Inbox("second")
    d = dispatcher([(Subscription("channel", "c"), first), (Subscription("channel", "c"), second)])
    consume(d, b"".join(push(b"message", b"c", b"%d" % i) for i in range(100)))
    assert [data for _, _, data in first.got] == [b"%d" % i for i in range(100)]
    assert second.got == first.got


def test_unrouted_messages_are_counted_not_delivered() -> None:
    inbox = Inbox("c")
    d = dispatcher([(Subscription("channel", "c"), inbox)])
    others = consume(d, push(b"message", b"gone", b"1") + push(b"pmessage", b"g*", b"gone", b"2"))
    assert others == [] and inbox.got == []
    assert (d.stats.messages, d.stats.unrouted) == (2, 2)


def test_oversized_payloads_are_refused_to_every_subscribed_inbox(caplog: pytest.LogCaptureFixture) -> None:
    small, also = Inbox("small"), Inbox("also")
    d = dispatcher([(Subscription("channel", "c"), small), (Subscription("pattern", "*"), also)], max_payload=4)
    consume(d, push(b"message", b"c", b"12345") + push(b"message", b"c", b"1234"))
    # Each refusing worker logs it, within its rate limit (tests/test_logs.py); the reader does not.
    assert not caplog.records
    assert small.got == [("c", None, b"1234")]
    assert [(m.data, reason) for m, reason in small.refused] == [(b"12345", "payload of 5 bytes exceeds the cap of 4")]
    assert also.refused == [] and also.got == []  # no pmessage was sent for "*"
    assert d.stats.oversized == 1


def test_binary_channel_names_survive_routing() -> None:
    raw = b"orders:\xff\xfe"
    inbox = Inbox("binary")
    d = dispatcher([(Subscription("pattern", "orders:*"), inbox)])
    consume(d, push(b"pmessage", b"orders:*", raw, b"x"))
    [(channel, pattern, _)] = inbox.got
    assert pattern == "orders:*"
    assert channel.encode("utf-8", "surrogateescape") == raw


def test_a_partial_reply_waits_for_the_rest_of_the_read() -> None:
    inbox = Inbox("c")
    d = dispatcher([(Subscription("channel", "c"), inbox)])
    reader = hiredis.Reader()
    whole = push(b"message", b"c", b"payload")
    reader.feed(whole[:10])
    assert d.consume(reader) == [] and inbox.got == []
    reader.feed(whole[10:])
    d.consume(reader)
    assert inbox.got == [("c", None, b"payload")]
