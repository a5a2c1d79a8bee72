"""The batch handler API (eventbus._batch_options, BatchFailed, and how a router reads a batch
handler): every mistake is one clear error at load time, before anything connects."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from eventbus import Batch, BatchFailed, ConfigError, Context, LoadError, Message, Reject, Router, on, on_stream
from eventbus._payloads import describe_payload

msgspec = pytest.importorskip("msgspec", reason="typed batch handlers need msgspec (eventbus[msgspec])")


class Order(msgspec.Struct):
    id: int


def test_batch_defaults_and_description() -> None:
    assert Batch() == Batch(max_size=100, max_wait=0.1)
    assert Batch(max_size=500, max_wait=0.05).describe() == "500/0.05s"


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_size": 0}, "Batch max_size must be an integer >= 1, got 0"),
        ({"max_size": 2.5}, "Batch max_size must be an integer >= 1, got 2.5"),
        ({"max_size": True}, "Batch max_size must be an integer >= 1, got True"),
        ({"max_wait": 0}, "Batch max_wait must be a number of seconds > 0, got 0"),
        ({"max_wait": -1.0}, "Batch max_wait must be a number of seconds > 0, got -1.0"),
        ({"max_wait": float("inf")}, "Batch max_wait must be a number of seconds > 0, got inf"),
        ({"max_wait": float("nan")}, "Batch max_wait must be a number of seconds > 0, got nan"),
        ({"max_wait": "1"}, "Batch max_wait must be a number of seconds > 0, got '1'"),
    ],
)
def test_invalid_batch_is_one_line(kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Batch(**kwargs)
    assert str(raised.value) == error


def test_batch_option_must_be_a_batch() -> None:
    with pytest.raises(ConfigError, match=r"batch must be an eventbus.Batch, such as Batch\(max_size=100"):
        on("orders", batch=100)


def test_batch_failed_names_positions_with_their_errors() -> None:
    refused = Reject("no such customer")
    failed = BatchFailed({3: refused, 1: TimeoutError("upstream")})
    assert failed.errors[3] is refused and isinstance(failed.errors[1], TimeoutError)
    shared = BatchFailed([0, 2, 2], "the upstream refused them")
    assert sorted(shared.errors) == [0, 2]
    assert all(str(exc) == "the upstream refused them" for exc in shared.errors.values())
    assert str(shared) == "2 message(s) of the batch failed: the upstream refused them"


@pytest.mark.parametrize("failed", [[-1], ["3"], [True], {0: "not an exception"}, "03"])
def test_batch_failed_refuses_what_is_not_a_position(failed: Any) -> None:
    with pytest.raises(TypeError, match="BatchFailed"):
        BatchFailed(failed)


def test_raw_typed_and_envelope_batch_handlers_load() -> None:
    from tests.sample_apps import batches

    router = Router.from_module(batches)
    described = {h.name: describe_payload(h) for h in router.handlers}
    assert described == {
        "tally": "list[Message]",
        "store": "list[Order](msgspec)+list[Message]",
        "watch": "list[Message]",
        "audit": "list[Message]",
    }
    store = next(h for h in router.handlers if h.name == "store")
    assert store.payload is not None and store.payload.decoder.label == "Order"


def test_a_batch_handler_must_take_a_list() -> None:
    @on("orders", batch=Batch())
    async def one(order: Order, ctx: Context) -> None:
        pass

    with pytest.raises(LoadError) as raised:
        Router([one])
    assert str(raised.value) == (
        "handler one has batch=, so it takes a list: annotate its first parameter list[Message] or "
        "list[<payload type>], not Order"
    )


def test_a_list_of_messages_without_batch_is_a_load_error() -> None:
    @on("orders")
    async def forgot(msgs: list[Message], ctx: Context) -> None:
        pass

    with pytest.raises(LoadError, match=r"takes a list\[.*Message\] but has no batch=: give it batch=Batch"):
        Router([forgot])


def test_without_batch_a_list_payload_is_still_one_json_array() -> None:
    @on("orders")
    async def many(orders: list[Order], ctx: Context) -> None:
        pass

    (handler,) = Router([many]).handlers
    assert handler.payload is not None and handler.payload.decoder.annotation == list[Order]
    assert not describe_payload(handler).startswith("list[list[")


def test_batch_envelope_must_be_a_list_of_messages() -> None:
    @on("orders", batch=Batch())
    async def envelope(orders: list[Order], ctx: Context, msg: Message) -> None:
        pass

    with pytest.raises(LoadError, match=r"its third parameter 'msg' must be annotated list\[Message\]"):
        Router([envelope])


def test_batch_annotations_imported_for_type_checkers_only() -> None:
    namespace: dict[str, Any] = {}
    exec(
        "from __future__ import annotations\n"
        "from eventbus import Batch, on\n"
        "@on('orders', batch=Batch())\n"
        "async def late(msgs: list[Message], ctx: Context) -> None: ...\n",
        namespace,
    )
    (handler,) = Router([namespace["late"]]).handlers
    assert describe_payload(handler) == "list[Message]"


def test_on_stream_integer_batch_is_the_read_count_with_a_warning() -> None:
    with pytest.warns(DeprecationWarning, match=r"now read_count=") as caught:

        @on_stream("jobs", batch=25)
        async def old(msg: Message, ctx: Context) -> None:
            pass

    assert caught[0].filename == __file__  # points at the user's decorator, not at eventbus
    (handler,) = Router([old]).handlers
    (subscription,) = handler.subscriptions
    assert subscription.stream is not None and subscription.stream.read_count == 25
    assert handler.options.batch is None


def test_on_stream_batch_takes_a_batch_without_a_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        @on_stream("jobs", batch=Batch(max_size=10, max_wait=0.5), read_count=50)
        async def new(msgs: list[Message], ctx: Context) -> None:
            pass

    (handler,) = Router([new]).handlers
    assert handler.options.batch == Batch(max_size=10, max_wait=0.5)
    (subscription,) = handler.subscriptions
    assert subscription.stream is not None and subscription.stream.read_count == 50


def test_on_stream_both_names_for_the_read_count_is_an_error() -> None:
    with pytest.raises(ConfigError, match="give read_count= alone"):
        on_stream("jobs", batch=25, read_count=50)
