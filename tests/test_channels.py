"""Channel: declared once, validated at once, used by @on and publish alike."""

from __future__ import annotations

import pytest

from eventbus import Channel, ConfigError, on
from eventbus._subscription import spec_of


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"name": ""}, "non-empty string"),
        ({"name": "x", "history": -1}, "history must be an integer >= 0"),
        ({"name": "x", "history": True}, "history must be an integer >= 0"),
        ({"name": "x", "history": 10, "ttl": 0}, "ttl must be None or a number of seconds > 0"),
        ({"name": "x", "ttl": 5}, "ttl without history keeps nothing"),
        ({"name": "x", "history": 1, "sharded": "yes"}, "sharded must be True or False"),
    ],
)
def test_bad_declarations_are_one_line_errors(kwargs: dict[str, object], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        Channel(**kwargs)  # type: ignore[arg-type]


def test_on_a_channel_subscribes_its_name_and_remembers_the_declaration() -> None:
    orders = Channel("orders", history=10_000, ttl=3600)
    plain = Channel("plain")

    @on(orders, plain, "other")
    async def handler(msg: object, ctx: object) -> None: ...

    spec = spec_of(handler)
    assert spec is not None
    assert [(s.kind, s.name, s.recoverable) for s in spec.subscriptions] == [
        ("channel", "orders", True),
        ("channel", "plain", False),
        ("channel", "other", False),
    ]


def test_a_sharded_channel_is_subscribed_with_ssubscribe() -> None:
    @on(Channel("s", history=5, sharded=True))
    async def handler(msg: object, ctx: object) -> None: ...

    spec = spec_of(handler)
    assert spec is not None and spec.subscriptions[0].kind == "sharded"
