"""@payload_mask: marking, finding, and the dashboard loading it from the module it is given."""

from __future__ import annotations

import types

import pytest

from eventbus import ConfigError, LoadError, payload_mask
from eventbus._masking import find_mask


def test_marking_changes_nothing_and_is_found() -> None:
    def hide(payload: bytes) -> str:
        return "<hidden>"

    assert payload_mask(hide) is hide
    module = types.ModuleType("m")
    module.hide = hide  # type: ignore[attr-defined]
    assert find_mask(module) is hide
    assert find_mask(types.ModuleType("empty")) is None


def test_two_masks_are_a_load_error() -> None:
    module = types.ModuleType("two")
    module.a = payload_mask(lambda p: "a")  # type: ignore[attr-defined]
    module.b = payload_mask(lambda p: "b")  # type: ignore[attr-defined]
    with pytest.raises(LoadError, match="more than one function"):
        find_mask(module)


def test_only_functions_are_marked() -> None:
    with pytest.raises(ConfigError, match="decorates a function"):
        payload_mask(42)  # type: ignore[type-var]


def test_the_dashboard_finds_the_mask_of_apps_broadcast() -> None:
    pytest.importorskip("twilio", reason="apps.broadcast needs eventbus[apps]")
    from eventbus._dashboard import load_apps

    [app] = load_apps(["apps.broadcast"])
    assert app.mask is not None and app.mask.__name__ == "masked_payload"
    assert "+5584981341213" not in app.mask(b'{"to": "+5584981341213", "message": "hi"}')
