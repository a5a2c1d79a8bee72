"""``@payload_mask``: how an application's payloads are shown to people outside its logs (a dashboard).

A dead letter keeps the payload whole (replay needs it), so whoever may read the dead-letter stream
sees it; a dashboard shows it to more people than that. An application whose payloads hold personal
data marks one function in its handler module::

    from eventbus import payload_mask

    @payload_mask
    def masked(payload: bytes) -> str:
        return mask_numbers(payload.decode("utf-8", "replace"))

``python -m eventbus dashboard --module MODULE`` finds it in MODULE and shows every payload through
it; a mask that raises shows nothing of the payload. Marking does not change the function.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import TypeVar

from eventbus._errors import ConfigError, LoadError

MASK_MARK = "__eventbus_payload_mask__"
Mask = Callable[[bytes], str]
F = TypeVar("F", bound=Mask)


def payload_mask(func: F) -> F:
    """Mark ``func(payload: bytes) -> str`` as the way this module's payloads are shown."""
    if not callable(func):
        raise ConfigError(f"@payload_mask decorates a function, not {func!r}")
    setattr(func, MASK_MARK, True)
    return func


def find_mask(module: ModuleType) -> Mask | None:
    """The function of ``module`` marked with :func:`payload_mask`, or None; two are a load error."""
    marked = {id(v): v for v in vars(module).values() if callable(v) and getattr(v, MASK_MARK, False) is True}
    if len(marked) > 1:
        names = ", ".join(sorted(getattr(f, "__qualname__", repr(f)) for f in marked.values()))
        raise LoadError(f"{module.__name__} marks more than one function with @payload_mask: {names}")
    return next(iter(marked.values()), None)
