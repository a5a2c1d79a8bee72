"""Bad input against a running bus on a real redis-server: nothing stops the loop or another handler.

Oversized payloads are refused before any decoding and dead-lettered; invalid UTF-8 and invalid or
absurdly nested JSON become PayloadError (dead-lettered, not retried); odd channel names route
exactly as Redis says; empty payloads are ordinary messages.
"""

from __future__ import annotations

import pytest

from eventbus import Context, DeadLetterStore, Message, PayloadError, on, on_pattern
from tests.fault.helpers import eventually, running
from tests.redis_server import RedisServer

CAP = 4096


async def test_bad_payloads_are_dead_lettered_and_the_bus_goes_on(redis_server: RedisServer) -> None:
    decoded: list[object] = []
    other: list[bytes] = []

    @on("in", name="decoder", retries=3, backoff=0)
    async def decoder(msg: Message, ctx: Context) -> None:
        decoded.append(msg.json())  # raises PayloadError on anything but JSON

    @on("other", name="bystander")
    async def bystander(msg: Message, ctx: Context) -> None:
        other.append(msg.data)

    bad = {
        b"\xff\xfe not utf-8": "not valid JSON",
        b'{"a": 1': "not valid JSON",
        b"[" * 2000 + b"]" * 2000: "not valid JSON",  # nesting far past orjson's 1024 limit
        b"": "not valid JSON",
        b"NaN": "not valid JSON",
    }
    good = [b'{"ok": true}', b"[" * 100 + b"]" * 100, b'"\xc3\xa9"']
    oversized = b'{"big": "' + b"x" * CAP + b'"}'
    async with running([decoder, bystander], redis_server.url, max_payload=CAP) as runner:
        client = runner.redis
        for payload in [*bad, oversized, *good]:
            await client.publish("in", payload)
            await client.publish("other", payload)
        await eventually(lambda: len(other) == len(bad) + len(good), what="the bystander's messages")
        await eventually(lambda: runner.stats.handlers["decoder"].dead_lettered == len(bad) + 1, what="dead letters")
        assert await runner.drain(10)
        stats = runner.stats.handlers["decoder"]
        # Refused, never retried: retrying cannot fix a payload.
        assert (stats.rejected, stats.retried, stats.failed, stats.handled) == (len(bad) + 1, 0, 0, len(good))
        assert runner.stats.oversized == 2  # refused for both handlers, before either decoded it
        assert runner.stats.handlers["bystander"].rejected == 1
        assert other == [*bad, *good]  # in order, untouched, the oversized one refused
        letters = await DeadLetterStore(runner.redis).list(count=100)
    assert len(decoded) == 3 and decoded[0] == {"ok": True} and decoded[2] == "é"
    by_payload = {d.payload: d for d in letters if d.handler == "decoder"}
    for payload, why in bad.items():
        assert why in by_payload[payload].error
        assert by_payload[payload].attempts == 1
    big = next(d for d in letters if d.handler == "decoder" and "exceeds the cap" in d.error)
    assert big.payload == oversized[:1024]  # a prefix is kept to show what arrived, not the flood


def test_message_decoding_errors_are_payload_errors() -> None:
    for payload in (b"\xff", b"[" * 2000 + b"]" * 2000, b"", b"   ", b"{", b"1e999999"):
        with pytest.raises(PayloadError, match="is not valid JSON"):
            Message("c", payload).json()
    with pytest.raises(PayloadError, match="not valid UTF-8"):
        _ = Message("c", b"\xc3\x28").text
    assert Message("c", b"").text == ""
    assert repr(Message("c", b"secret")) == "<Message 'c' 6 bytes>"  # never the content


async def test_odd_channel_names_route_like_redis(redis_server: RedisServer) -> None:
    got: dict[str, list[str]] = {}
    names = ["purchase_orders:Opening Ceremony", "ünïcödé ☃ 😀", "a*b?[c]", "tab\tnewline\n", "x" * 300]

    def record(key: str, msg: Message) -> None:
        got.setdefault(key, []).append(msg.channel)

    handlers: list[object] = []
    for i, name in enumerate(names):

        @on(name, name=f"exact{i}")
        async def exact(msg: Message, ctx: Context, i: int = i) -> None:
            record(f"exact{i}", msg)

        handlers.append(exact)

    @on_pattern("purchase_orders:* Ceremony", name="ceremonies")
    async def ceremonies(msg: Message, ctx: Context) -> None:
        record("ceremonies", msg)

    @on_pattern(r"lit\*[?]*", name="escaped")
    async def escaped(msg: Message, ctx: Context) -> None:
        record("escaped", msg)

    async with running([*handlers, ceremonies, escaped], redis_server.url) as runner:
        client = runner.redis
        for name in [*names, "aXb?c", "ab", "lit*?x", "litX?x", "lit*x", "done"]:
            await client.publish(name, b"")
        await client.publish("purchase_orders:Closing Ceremony", b"")
        await eventually(lambda: runner.stats.messages >= len(names) + 3, what="routed messages")
        assert await runner.drain(10)
    for i, name in enumerate(names):
        assert got[f"exact{i}"] == [name]  # a glob character in a channel name is just a character
    assert got["ceremonies"] == ["purchase_orders:Opening Ceremony", "purchase_orders:Closing Ceremony"]
    assert got["escaped"] == ["lit*?x"]
