from __future__ import annotations

import types

import pytest

from eventbus import LoadError, Message, Router, on, on_pattern
from eventbus.router import load_target


def test_loads_a_module_by_name() -> None:
    router = load_target("tests.sample_apps.orders")
    assert {h.name for h in router.handlers} == {"count", "ceremony", "opening_sync"}
    assert router.channels() == ["purchase_orders", "purchase_orders:Opening Ceremony"]
    assert router.patterns() == ["purchase_orders:* Ceremony"]
    assert [h.__name__ for h in router.startup] == ["opened"]
    assert [h.__name__ for h in router.shutdown] == ["closed"]
    assert not next(h for h in router.handlers if h.name == "opening_sync").is_async


def test_module_attr_naming_a_list() -> None:
    module = types.ModuleType("fake_mod")

    async def handler_func(msg: Message, ctx: object) -> None: ...

    handler = on("x")(handler_func)
    module.handlers = [handler]  # type: ignore[attr-defined]
    import sys

    sys.modules["fake_mod"] = module
    try:
        router = load_target("fake_mod:handlers")
    finally:
        del sys.modules["fake_mod"]
    assert [h.func for h in router.handlers] == [handler]


def test_module_not_found_is_a_one_line_error() -> None:
    with pytest.raises(LoadError, match="module 'no_such_module_xyz' not found"):
        load_target("no_such_module_xyz")


def test_missing_attribute() -> None:
    with pytest.raises(LoadError, match="does not define 'nope'"):
        load_target("tests.sample_apps.orders:nope")


def test_module_without_handlers() -> None:
    with pytest.raises(LoadError, match="defines no handlers"):
        load_target("tests.redis_server")


def test_duplicate_handler_names() -> None:
    def make() -> object:
        @on("a")
        async def same(msg: Message, ctx: object) -> None: ...

        return same

    with pytest.raises(LoadError, match="duplicate handler name"):
        Router([make(), make()])


def test_explicit_names_resolve_duplicates() -> None:
    @on("a", name="one")
    async def h1(msg: Message, ctx: object) -> None: ...

    @on_pattern("b*", name="two")
    async def h2(msg: Message, ctx: object) -> None: ...

    assert {h.name for h in Router([h1, h2]).handlers} == {"one", "two"}


def test_unmarked_function_in_a_list() -> None:
    async def plain(msg: Message, ctx: object) -> None: ...

    with pytest.raises(LoadError, match="is not a handler"):
        load_target([plain])


def test_empty_list() -> None:
    with pytest.raises(LoadError, match="empty"):
        load_target([])
