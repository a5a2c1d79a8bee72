from __future__ import annotations

import pytest

from eventbus import ConfigError, Message, on, on_pattern
from eventbus._subscription import HandlerOptions, Subscription, spec_of


def test_decorators_only_mark_and_return_the_function() -> None:
    async def handler(msg: Message, ctx: object) -> None: ...

    marked = on("orders", concurrency=4)(handler)
    assert marked is handler
    spec = spec_of(handler)
    assert spec is not None
    assert spec.subscriptions == (Subscription("channel", "orders"),)
    assert spec.options.concurrency == 4


def test_a_star_in_a_channel_name_is_not_a_pattern() -> None:
    @on("orders:*")
    async def handler(msg: Message, ctx: object) -> None: ...

    spec = spec_of(handler)
    assert spec is not None and spec.subscriptions[0].kind == "channel"


def test_stacked_decorators_add_subscriptions() -> None:
    @on("a")
    @on_pattern("b:*", retries=2)
    async def handler(msg: Message, ctx: object) -> None: ...

    spec = spec_of(handler)
    assert spec is not None
    assert set(spec.subscriptions) == {Subscription("channel", "a"), Subscription("pattern", "b:*")}
    assert spec.options.retries == 2


def test_stacked_decorators_with_conflicting_options_fail() -> None:
    with pytest.raises(ConfigError, match="concurrency given twice"):

        @on("a", concurrency=2)
        @on("b", concurrency=3)
        async def handler(msg: Message, ctx: object) -> None: ...


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "concurrency"),
        ({"inbox_size": -1}, "inbox_size"),
        ({"overflow": "block"}, "overflow"),
        ({"retries": -1}, "retries"),
        ({"backoff": "soon"}, "backoff"),
        ({"colour": "red"}, "unknown handler option"),
    ],
)
def test_invalid_options_are_clear_errors(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        on("a", **options)


def test_empty_channel_is_an_error() -> None:
    with pytest.raises(ConfigError, match="non-empty"):
        on("")


def test_non_callable_is_an_error() -> None:
    with pytest.raises(ConfigError, match="decorate a function"):
        on("a")(42)  # type: ignore[type-var]


def test_defaults_keep_publish_order() -> None:
    assert HandlerOptions().concurrency == 1
    assert HandlerOptions().overflow == "drop_newest"


def test_several_channels_in_one_decorator() -> None:
    @on("a", "b", "a")
    async def handler(msg: Message, ctx: object) -> None: ...

    spec = spec_of(handler)
    assert spec is not None
    assert spec.subscriptions == (Subscription("channel", "a"), Subscription("channel", "b"))


def test_no_channel_is_an_error() -> None:
    with pytest.raises(ConfigError, match="at least one"):
        on()
