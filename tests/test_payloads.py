"""Typed handlers (eventbus._payloads): every supported payload type, on TestBus and a real redis-server.

Each case publishes a typed object (encoded by the same codecs), a raw payload as another client
would send it, and an invalid one: the invalid one is refused at once (never retried), counted,
dead-lettered, and logged with the validation error but none of the payload's content.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypedDict

import pytest

from eventbus import Context, LoadError, Message, Router, Runner, on, on_stream
from eventbus._deadletter import DeadLetterStore
from eventbus._payloads import encode_json
from tests.buses import publish, running, settle

msgspec = pytest.importorskip("msgspec", reason="typed-handler tests need msgspec (eventbus[msgspec])")
pydantic = pytest.importorskip("pydantic", reason="typed-handler tests need pydantic (eventbus[pydantic])")

SECRET = "SECRET-5584"  # put into every invalid payload: it must never reach the log


class Order(msgspec.Struct):
    id: int
    customer: str
    qty: int = 1


class PydanticOrder(pydantic.BaseModel):
    id: int
    customer: str


@dataclasses.dataclass
class DataOrder:
    id: int
    customer: str


class DictOrder(TypedDict):
    id: int
    customer: str


DECODES = 0


class CountedOrder(msgspec.Struct):
    id: int

    def __post_init__(self) -> None:
        global DECODES
        DECODES += 1


# (annotation, what to publish, what the handler must receive, an invalid payload, expected error text)
CASES: list[tuple[Any, Any, Any, bytes | None, str]] = [
    (Order, Order(1, "ann", 2), Order(1, "ann", 2), f'{{"id": "{SECRET}", "customer": "a"}}'.encode(), "$.id"),
    (
        PydanticOrder,
        PydanticOrder(id=2, customer="bo"),
        PydanticOrder(id=2, customer="bo"),
        f'{{"id": "{SECRET}"}}'.encode(),
        "customer: Field required",
    ),
    (DataOrder, DataOrder(3, "cy"), DataOrder(3, "cy"), f'{{"id": 3, "customer": ["{SECRET}"]}}'.encode(), "customer"),
    (DictOrder, {"id": 4, "customer": "di"}, {"id": 4, "customer": "di"}, f'{{"customer": "{SECRET}"}}'.encode(), "id"),
    (
        list[Order],
        [Order(5, "ed")],
        [Order(5, "ed")],
        f'[{{"id": 5, "customer": 7, "x": "{SECRET}"}}]'.encode(),
        "$[0]",
    ),
    (dict, {"a": [1, 2]}, {"a": [1, 2]}, f'["{SECRET}"]'.encode(), "expected a JSON object"),
    (list, [1, "two"], [1, "two"], f'{{"{SECRET}": 1}}'.encode(), "expected a JSON array"),
    (str, "Opening Ceremony", "Opening Ceremony", b"\xff" + SECRET.encode(), "UTF-8"),
    (bytes, b"\x00\xffraw", b"\x00\xffraw", None, ""),
    (int, 42, 42, SECRET.encode(), "not an integer"),
    (float, 1.5, 1.5, SECRET.encode(), "not a number"),
]


def typed_handler(annotation: Any, seen: list[Any], **options: Any) -> Callable[..., Any]:
    async def handler(payload, ctx):  # type: ignore[no-untyped-def]
        seen.append(payload)

    handler.__annotations__ = {"payload": annotation, "ctx": Context, "return": None}
    return on("typed", retries=3, backoff=0, **options)(handler)


Start = Callable[..., AbstractAsyncContextManager[Runner]]


@pytest.fixture(params=["memory", "redis"])
def start(request: pytest.FixtureRequest) -> Start:
    url = request.getfixturevalue("redis_server").url if request.param == "redis" else None

    def factory(handlers: Any, **options: Any) -> AbstractAsyncContextManager[Runner]:
        return running(request.param, handlers, url, **options)

    return factory


@pytest.mark.parametrize(("annotation", "obj", "expected", "invalid", "error"), CASES, ids=lambda c: repr(c)[:20])
async def test_payload_decoded_by_annotation(
    start: Start,
    caplog: pytest.LogCaptureFixture,
    annotation: Any,
    obj: Any,
    expected: Any,
    invalid: bytes | None,
    error: str,
) -> None:
    seen: list[Any] = []
    handler = typed_handler(annotation, seen)
    caplog.set_level(logging.DEBUG, logger="eventbus")
    async with start([handler]) as runner:
        await publish(runner, "typed", obj)  # encoded by eventbus's codecs
        if invalid is not None:
            await publish(runner, "typed", invalid)
        await settle(runner)
        stats = runner.stats.handlers["handler"]
        letters = await DeadLetterStore(runner.redis).list()
    assert seen == [expected]
    assert type(seen[0]) is type(expected)
    if invalid is None:
        assert letters == []
        return
    # Refused at once: not retried although the handler allows 3 retries.
    assert (stats.rejected, stats.retried, stats.failed, stats.dead_lettered) == (1, 0, 0, 1)
    assert len(letters) == 1
    assert letters[0].payload == invalid
    assert letters[0].attempts == 1
    assert error in letters[0].error
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert error in logged
    assert SECRET not in logged
    assert SECRET not in letters[0].error


async def test_typed_payload_from_a_plain_client(start: Start) -> None:
    """What redis-cli or another language's client publishes decodes the same as our own encoding."""
    seen: list[Any] = []
    async with start([typed_handler(Order, seen)]) as runner:
        await publish(runner, "typed", b'{"id": 7, "customer": "fay", "qty": 3}')
        await settle(runner)
    assert seen == [Order(7, "fay", 3)]


async def test_envelope_as_a_third_parameter_annotated_message(start: Start) -> None:
    seen: list[tuple[Order, str, bytes]] = []

    @on("envelope")
    async def handler(order: Order, ctx: Context, msg: Message) -> None:
        seen.append((order, msg.channel, msg.data))

    async with start([handler]) as runner:
        await publish(runner, "envelope", Order(1, "gus"))
        await settle(runner)
    assert seen == [(Order(1, "gus"), "envelope", msgspec.json.encode(Order(1, "gus")))]


async def test_raw_handlers_keep_the_message(start: Start) -> None:
    seen: list[Any] = []

    @on("raw")
    async def annotated(msg: Message, ctx: Context) -> None:
        seen.append(type(msg))

    @on("raw")
    async def bare(msg, ctx):  # type: ignore[no-untyped-def]
        seen.append(type(msg))

    async with start([annotated, bare]) as runner:
        await publish(runner, "raw", "x")
        await settle(runner)
    assert seen == [Message, Message]


async def test_plain_def_typed_handler_runs_in_a_thread(start: Start) -> None:
    seen: list[Order] = []

    @on("sync")
    def handler(order: Order, ctx: Context) -> None:
        seen.append(order)

    async with start([handler]) as runner:
        await publish(runner, "sync", Order(9, "hal"))
        await publish(runner, "sync", b"not json")
        await settle(runner)
        assert runner.stats.handlers["handler"].rejected == 1
    assert seen == [Order(9, "hal")]


async def test_a_message_for_several_handlers_of_one_type_is_decoded_once(start: Start) -> None:
    seen: list[CountedOrder] = []

    @on("once")
    async def first(order: CountedOrder, ctx: Context) -> None:
        seen.append(order)

    @on("once")
    async def second(order: CountedOrder, ctx: Context) -> None:
        seen.append(order)

    global DECODES
    DECODES = 0
    async with start([first, second]) as runner:
        await publish(runner, "once", CountedOrder(1))
        await settle(runner)
    assert DECODES == 2  # the one published (built by the test) and the one decoded for both handlers
    assert len(seen) == 2 and seen[0] is seen[1]


async def test_handler_publishes_typed_objects(start: Start) -> None:
    received: list[PydanticOrder] = []

    @on("in")
    async def relay(order: Order, ctx: Context) -> None:
        await ctx.publish("out", PydanticOrder(id=order.id, customer=order.customer.upper()))

    @on("out")
    async def sink(order: PydanticOrder, ctx: Context) -> None:
        received.append(order)

    async with start([relay, sink]) as runner:
        await publish(runner, "in", Order(3, "ida"))
        await settle(runner)
    assert received == [PydanticOrder(id=3, customer="IDA")]


def test_encode_json_uses_the_payload_libraries() -> None:
    assert encode_json(Order(1, "a")) == b'{"id":1,"customer":"a","qty":1}'
    assert encode_json(PydanticOrder(id=1, customer="a")) == b'{"id":1,"customer":"a"}'
    assert encode_json(DataOrder(1, "a")) == b'{"id":1,"customer":"a"}'


async def test_typed_stream_handler(redis_server: Any) -> None:
    seen: list[Order] = []

    @on_stream("orders-stream", block=0.05)
    async def consume(order: Order, ctx: Context) -> None:
        seen.append(order)

    async with running("redis", [consume], redis_server.url) as runner:
        assert runner.publisher is not None
        await runner.publisher.append("orders-stream", Order(5, "jo"))
        await runner.publisher.append("orders-stream", b"[1]")
        for _ in range(200):
            if seen and runner.stats.handlers["consume"].rejected:
                break
            await asyncio.sleep(0.02)
        letters = await DeadLetterStore(runner.redis).list()
    assert seen == [Order(5, "jo")]
    assert [letter.payload for letter in letters] == [b"[1]"]


# -- load time --------------------------------------------------------------------------------


class NotAPayload:
    pass


def test_unsupported_annotation_is_a_load_error() -> None:
    async def handler(payload, ctx):  # type: ignore[no-untyped-def]
        pass

    handler.__annotations__ = {"payload": NotAPayload}
    with pytest.raises(LoadError, match="NotAPayload is not a supported payload type"):
        Router([on("x")(handler)])


def test_unresolvable_annotation_is_a_load_error() -> None:
    async def handler(payload, ctx):  # type: ignore[no-untyped-def]
        pass

    handler.__annotations__ = {"payload": "Missing"}
    with pytest.raises(LoadError, match="cannot resolve its annotations: name 'Missing' is not defined"):
        Router([on("x")(handler)])


def test_router_shares_one_decoder_per_type() -> None:
    @on("a")
    async def one(order: Order, ctx: Context) -> None:
        pass

    @on("b")
    async def two(order: Order, ctx: Context) -> None:
        pass

    router = Router([one, two])
    plans = [h.payload for h in router.handlers]
    assert plans[0] is not None and plans[1] is not None
    assert plans[0].decoder is plans[1].decoder and plans[0].decoder.users == 2


def test_missing_payload_library_fails_at_load_with_one_line(tmp_path: Any) -> None:
    (tmp_path / "needs_msgspec.py").write_text(
        "import msgspec\nfrom eventbus import on\n\nclass O(msgspec.Struct):\n    id: int\n\n"
        "@on('x')\nasync def h(o: O, ctx):\n    pass\n"
    )
    # sys.modules["msgspec"] = None makes `import msgspec` fail as if it were not installed.
    code = "import sys; sys.modules['msgspec'] = None; from eventbus._cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "routes", "needs_msgspec"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": f"{tmp_path}:{os.getcwd()}"},
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "eventbus: error: module 'needs_msgspec' needs msgspec, which is not installed: pip install 'eventbus[msgspec]'"
    ]


async def test_testbus_publishes_typed_and_shows_what_handlers_published_typed() -> None:
    from eventbus.testing import TestBus

    @on("in")
    async def relay(order: Order, ctx: Context) -> None:
        await ctx.publish("out", PydanticOrder(id=order.id, customer=order.customer))
        await ctx.redis.publish("out", b'{"id": 2, "customer": "raw"}')

    async with TestBus([relay]) as bus:
        await bus.publish("in", Order(1, "kim"))
        await bus.drain()
        assert bus.published("out", PydanticOrder) == [
            PydanticOrder(id=1, customer="kim"),
            PydanticOrder(id=2, customer="raw"),
        ]
        assert bus.published("in", Order) == [Order(1, "kim", 1)]
        assert bus.published("in") == [b'{"id":1,"customer":"kim","qty":1}']
        assert bus.published("nowhere") == []


def test_typed_handler_signature_is_checked_at_load() -> None:
    @on("x")
    async def no_ctx(order: Order) -> None:
        pass

    @on("x")
    async def third_not_message(order: Order, ctx: Context, extra: int) -> None:
        pass

    with pytest.raises(LoadError, match=r"no_ctx: a typed handler takes \(payload, ctx\)"):
        Router([no_ctx])
    with pytest.raises(LoadError, match="third parameter 'extra' must be annotated Message"):
        Router([third_not_message])


def test_raw_handler_with_type_checking_only_imports_still_loads() -> None:
    async def handler(msg, ctx):  # type: ignore[no-untyped-def]
        pass

    # As written under `from __future__ import annotations` with the imports under TYPE_CHECKING.
    handler.__annotations__ = {"msg": "eventbus.Message", "ctx": "NotImportedContext", "return": "None"}
    router = Router([on("x")(handler)])
    assert router.handlers[0].payload is None
