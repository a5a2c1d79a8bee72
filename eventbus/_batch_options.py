"""How a batch handler's batches are closed: a small frozen record, validated once.

    @on("purchase_orders", batch=Batch(max_size=500, max_wait=0.05))
    async def sales(msgs: list[Message], ctx: Context) -> None: ...

It lives apart from the worker that collects the batches so the decorators can build it without
importing the runtime (as :mod:`eventbus._stream_options` does for streams).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from eventbus._errors import ConfigError

DEFAULT_MAX_SIZE = 100
DEFAULT_MAX_WAIT = 0.1


@dataclass(frozen=True, slots=True)
class Batch:
    """A batch closes when it holds ``max_size`` messages, or ``max_wait`` seconds after its first
    message arrived, whichever comes first; never earlier (a lone message waits the whole window).

    max_size: the most messages one call of the handler receives (an integer >= 1).
    max_wait: seconds a batch stays open after its first message (a number > 0).
    """

    max_size: int = DEFAULT_MAX_SIZE
    max_wait: float = DEFAULT_MAX_WAIT

    def __post_init__(self) -> None:
        if isinstance(self.max_size, bool) or not isinstance(self.max_size, int) or self.max_size < 1:
            raise ConfigError(f"Batch max_size must be an integer >= 1, got {self.max_size!r}")
        if (
            isinstance(self.max_wait, bool)
            or not isinstance(self.max_wait, (int, float))
            or not 0 < self.max_wait < math.inf
        ):
            raise ConfigError(f"Batch max_wait must be a number of seconds > 0, got {self.max_wait!r}")

    def describe(self) -> str:
        """For people (``eventbus routes``, logs): ``500/0.05s``."""
        return f"{self.max_size}/{self.max_wait:g}s"
