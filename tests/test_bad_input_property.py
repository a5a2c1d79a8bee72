"""Property: whatever payload and channel name a publisher sends, the bus delivers it byte for byte
(or refuses it over the cap, counted), decoding failures become PayloadError, and the loop lives on.

The bus runs in a thread of its own (its own event loop, a real redis-server), so that hypothesis
drives a plain synchronous test and each example is one PUBLISH and one wait.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eventbus import Context, Message, PayloadError, Runner, on_pattern
from tests.fault.helpers import FAST
from tests.redis_server import RedisServer

CAP = 2048


class BusThread:
    def __init__(self, handlers: list[Any], url: str, **options: Any) -> None:
        self.runner = Runner(handlers, url=url, **{**FAST, **options})
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), daemon=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            async with self.runner:
                self._ready.set()
                await self._stop.wait()
        except Exception as exc:  # noqa: BLE001 - handed to the test thread, which fails on it
            self._error = exc
            self._ready.set()

    def __enter__(self) -> BusThread:
        self._thread.start()
        assert self._ready.wait(30) and self._error is None, self._error
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


received: list[tuple[bytes, bytes]] = []
outcomes = {"text_error": 0, "json_error": 0}


@on_pattern("*", name="everything")
async def everything(msg: Message, ctx: Context) -> None:
    try:
        _ = msg.text
    except PayloadError:
        outcomes["text_error"] += 1
    try:
        msg.json()
    except PayloadError:
        outcomes["json_error"] += 1
    received.append((msg.channel.encode("utf-8", "surrogateescape"), msg.data))


@on_pattern("*", name="strict")
async def strict(msg: Message, ctx: Context) -> None:
    msg.json()  # uncaught: invalid JSON must be dead-lettered, never kill anything


@pytest.fixture(scope="module")
def bus() -> Iterator[tuple[BusThread, RedisServer]]:
    server = RedisServer().start()
    try:
        with BusThread([everything, strict], server.url, max_payload=CAP) as bus_thread:
            yield bus_thread, server
    finally:
        server.stop()


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


nested = st.integers(1, 1500).map(lambda d: b"[" * d + b"]" * d)
json_text = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=5), kids, max_size=4),
    max_leaves=10,
).map(orjson.dumps)
payloads = st.one_of(
    st.binary(max_size=CAP + 200),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    json_text,
    nested,
    st.just(b""),
)
channels = st.one_of(
    st.binary(min_size=1, max_size=60),
    st.text(min_size=1, max_size=40).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([b"a b", b"*", b"?", b"[x]", b"\\", b"purchase_orders:Opening Ceremony", "☃".encode()]),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(channel=channels, payload=payloads)
def test_any_payload_on_any_channel(bus: tuple[BusThread, RedisServer], channel: bytes, payload: bytes) -> None:
    bus_thread, server = bus
    stats = bus_thread.runner.stats
    before_received, before_oversized = len(received), stats.oversized
    with server.client() as client:
        assert client.publish(channel, payload) == 1
    if len(payload) > CAP:
        wait_for(lambda: stats.oversized == before_oversized + 1)  # refused before any handler saw it
    else:
        wait_for(lambda: len(received) == before_received + 1)
        assert received[-1] == (channel, payload)
    for name in ("everything", "strict"):
        assert stats.handlers[name].failed == 0  # PayloadError is a rejection, never a crash


def test_the_bus_is_healthy_after_the_flood(bus: tuple[BusThread, RedisServer]) -> None:
    bus_thread, server = bus
    stats = bus_thread.runner.stats
    with server.client() as client:
        client.publish("after", b'{"still": "alive"}')
    wait_for(lambda: received and received[-1] == (b"after", b'{"still": "alive"}'))
    strict_stats = stats.handlers["strict"]
    wait_for(lambda: strict_stats.received == strict_stats.handled + strict_stats.dead_lettered)
    # Every delivered payload that was not JSON was dead-lettered by the strict handler, none lost.
    assert strict_stats.rejected == outcomes["json_error"] + stats.oversized
    assert stats.reconnects == 0
