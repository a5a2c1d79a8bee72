from __future__ import annotations

import os
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from eventbus import LoadError, Message, Router, on, on_pattern
from eventbus._router import load_target
from tests.cli_process import ROOT


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


@pytest.mark.parametrize(
    ("target", "suggestion"),
    [
        ("apps/olympics/listeners.py", "apps.olympics.listeners"),
        ("./apps/olympics/listeners.py:router", "apps.olympics.listeners:router"),
        ("shop/__init__.py", "shop"),
        ("listeners.py", "listeners"),
    ],
)
def test_a_file_path_suggests_the_dotted_name(target: str, suggestion: str) -> None:
    with pytest.raises(LoadError) as caught:
        load_target(target)
    assert str(caught.value) == f"{target!r} is a file path, not a module name: did you mean {suggestion}?"


def test_a_file_path_outside_the_current_directory_says_where_to_run_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for init in ("pkg/__init__.py", "pkg/sub/__init__.py"):
        (tmp_path / init).write_text("")
    monkeypatch.chdir(ROOT)
    with pytest.raises(
        LoadError, match=rf"did you mean pkg\.sub\.mod\? \(run from {tmp_path}, or put it on PYTHONPATH\)"
    ):
        load_target(str(tmp_path / "pkg" / "sub" / "mod.py"))


def test_an_empty_attribute_is_refused() -> None:
    with pytest.raises(LoadError, match=r"invalid target 'tests.sample_apps.orders:': nothing after ':'"):
        load_target("tests.sample_apps.orders:")


@pytest.mark.parametrize(
    ("source", "line", "error"),
    [
        ("x = 1\n\nraise RuntimeError('no config')\n", 3, "RuntimeError: no config"),
        ("def broken(:\n", 1, "SyntaxError: invalid syntax"),
        ("import json\n\njson.loads('{')\n", 3, "JSONDecodeError: "),
    ],
)
def test_an_import_error_names_the_file_and_line(
    source: str, line: int, error: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"broken_{abs(hash(source))}"
    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(LoadError) as caught:
        load_target(name)
    # A library's own frame (json's decoder) comes after the application's line that called it.
    assert str(caught.value).startswith(f"module {name!r} failed to import: {name}.py:{line}"), caught.value
    assert error in str(caught.value)


# -- signatures, checked at load ----------------------------------------------------------------


async def no_parameters() -> None: ...


async def three_required(msg: Message, ctx: object, extra: object) -> None: ...


async def keyword_required(msg: Message, ctx: object, *, tenant: str) -> None: ...


async def typed_four(order: int, ctx: object, msg: Message, extra: object) -> None: ...


class Handler:
    async def __call__(self, msg: Message, ctx: object) -> None: ...


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (no_parameters, r"handler no_parameters\(\) cannot be called as \(msg, ctx\): too many positional arguments"),
        (three_required, r"three_required\(msg, ctx, extra\) cannot be called as \(msg, ctx\): missing .*'extra'"),
        (keyword_required, r"keyword_required\(msg, ctx, \*, tenant\) .*missing .*'tenant'"),
        (typed_four, r"typed_four\(order, ctx, msg, extra\) cannot be called as \(payload, ctx, msg\)"),
        (Handler, r"'Handler' is a class: @on/@on_pattern decorate a function"),
    ],
)
def test_a_handler_that_cannot_take_msg_and_ctx_is_a_load_error(func: Callable[..., Any], message: str) -> None:
    with pytest.raises(LoadError, match=message) as caught:
        Router([on("x")(func)])
    assert "\n" not in str(caught.value)


def test_legal_signatures_load() -> None:
    async def raw(msg, ctx):  # type: ignore[no-untyped-def]  # unannotated is legal
        ...

    async def defaults(msg: Message, ctx: object, extra: int = 0, *rest: object, **options: object) -> None: ...

    async def typed(order: int, ctx: object) -> None: ...

    async def envelope(order: int, ctx: object, msg: Message) -> None: ...

    def plain(msg: Message, ctx: object) -> None: ...

    handlers = [on("x")(f) for f in (raw, defaults, typed, envelope, plain)]
    handlers.append(on("x", name="instance")(Handler()))  # an instance whose __call__ takes (msg, ctx)
    assert len(Router(handlers).handlers) == 6


def test_a_hook_that_cannot_take_ctx_is_a_load_error() -> None:
    from eventbus import on_startup

    async def opened() -> None: ...

    with pytest.raises(LoadError, match=r"startup hook opened\(\) cannot be called as \(ctx\)"):
        Router([on_startup(opened), on("x")(raw_ok)])


async def raw_ok(msg: Message, ctx: object) -> None: ...


@pytest.mark.parametrize("command", ["run", "routes"])
@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("@on('x')\nclass Orders:\n    pass\n", "'Orders' is a class"),
        ("@on('x')\nasync def tick():\n    pass\n", "handler tick() cannot be called as (msg, ctx)"),
    ],
)
def test_cli_refuses_a_bad_signature_with_one_line_and_exit_2(
    command: str, source: str, message: str, tmp_path: Path
) -> None:
    (tmp_path / "badsig.py").write_text("from eventbus import on\n\n" + source)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}
    env.pop("EVENTBUS_URL", None)
    args = ["--url", "redis://127.0.0.1:1"] if command == "run" else []
    result = subprocess.run(
        [sys.executable, "-m", "eventbus", command, "badsig", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
