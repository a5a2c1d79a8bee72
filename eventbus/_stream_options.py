"""How an ``@on_stream`` handler reads its consumer group: a small frozen record, validated once.

It lives apart from :mod:`eventbus._streams` (the consumer itself) so the decorators can build it
without importing the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from eventbus._errors import ConfigError

STREAM_OPTION_NAMES = ("group", "consumer", "read_count", "block", "claim_idle", "max_deliveries", "start")


@dataclass(frozen=True, slots=True)
class StreamOptions:
    """One consumer group subscription.

    group:          the consumer group (default: the handler's name, so each handler sees every entry
                    once while the processes running it share the work).
    consumer:       this process's consumer name in the group (default: ``<hostname>-<pid>``).
    read_count:     entries asked for per XREADGROUP / XAUTOCLAIM (the COUNT argument); before
                    batch handlers it was ``batch=<int>``, still accepted with a DeprecationWarning.
    block:          seconds one XREADGROUP waits for new entries before it is issued again.
    claim_idle:     seconds an entry may stay pending (delivered, not acknowledged) before another
                    consumer takes it over with XAUTOCLAIM: longer than the handler ever needs.
    max_deliveries: deliveries after which a failing entry is acknowledged and dead-lettered.
    start:          where a group created by eventbus starts: "0" (everything retained in the
                    stream) or "$" (only entries appended from now on).
    """

    group: str | None = None
    consumer: str | None = None
    read_count: int = 100
    block: float = 5.0
    claim_idle: float = 60.0
    max_deliveries: int = 5
    start: str = "0"

    def __post_init__(self) -> None:
        for key in ("group", "consumer"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{key} must be a non-empty string, got {value!r}")
        if isinstance(self.read_count, bool) or not isinstance(self.read_count, int) or self.read_count < 1:
            raise ConfigError(f"read_count must be an integer >= 1, got {self.read_count!r}")
        if not isinstance(self.block, (int, float)) or self.block <= 0:
            raise ConfigError(f"block must be a number of seconds > 0, got {self.block!r}")
        if not isinstance(self.claim_idle, (int, float)) or self.claim_idle <= 0:
            raise ConfigError(f"claim_idle must be a number of seconds > 0, got {self.claim_idle!r}")
        if not isinstance(self.max_deliveries, int) or self.max_deliveries < 1:
            raise ConfigError(f"max_deliveries must be an integer >= 1, got {self.max_deliveries!r}")
        if not isinstance(self.start, str) or not self.start:
            raise ConfigError(f"start must be a stream id such as '0' or '$', got {self.start!r}")
