"""Flow control for ``overflow="pause"``: stop reading the subscription connection(s) while a
handler's inbox is over its memory budget, and read again once it has drained below half of it.

A paused connection is not read, so Redis keeps what is published for us in our output buffer:
that is the point of the policy (no drop inside the process), and its price. Every handler on the
connection waits, not only the one that is full, and once the buffer passes the server's
``client-output-buffer-limit pubsub`` Redis closes the connection, which the subscriber then
reports as a gap and reconnects (pub/sub is at-most-once).
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

log = logging.getLogger("eventbus.flow")

# Under sustained overload reading pauses and resumes many times a second: report at most this often.
PAUSE_LOG_INTERVAL = 5.0


class Pausable(Protocol):
    """Anything whose reading can be stopped and restarted: a connection's transport, or the
    in-memory broker's subscriber."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


class ReadGate:
    """Pauses every attached reader while at least one handler holds the gate.

    Handlers (by name) hold the gate when their inbox goes over budget and release it when it
    has drained to its low-water mark; readers attach once subscribed and detach when their
    connection is gone, and a reader attached while the gate is held starts paused.
    """

    def __init__(self) -> None:
        self._holders: set[str] = set()
        self._readers: list[Pausable] = []
        self._paused_at = 0.0
        self.pauses = 0  # how many times reading was stopped
        self.paused_seconds = 0.0  # for how long in total (finished pauses)
        self._last_log = -PAUSE_LOG_INTERVAL
        self._pauses_logged = 0

    @property
    def paused(self) -> bool:
        return bool(self._holders)

    def hold(self, holder: str) -> None:
        if holder in self._holders:
            return
        if not self._holders:
            self.pauses += 1
            self._paused_at = time.monotonic()
            for reader in self._readers:
                reader.pause_reading()
            if self._paused_at - self._last_log >= PAUSE_LOG_INTERVAL:
                log.warning(
                    "handler %s is over its inbox budget: reading paused (overflow=pause; %d pause(s) since the "
                    "last report, %.1fs paused in total); Redis buffers meanwhile, for every handler on the connection",
                    holder,
                    self.pauses - self._pauses_logged,
                    self.paused_seconds,
                )
                self._last_log = self._paused_at
                self._pauses_logged = self.pauses
        self._holders.add(holder)

    def release(self, holder: str) -> None:
        if holder not in self._holders:
            return
        self._holders.discard(holder)
        if not self._holders:
            paused_for = time.monotonic() - self._paused_at
            self.paused_seconds += paused_for
            log.debug("handler %s drained to half its budget: reading resumed after %.3fs", holder, paused_for)
            for reader in list(self._readers):
                reader.resume_reading()

    def attach(self, reader: Pausable) -> None:
        self._readers.append(reader)
        if self._holders:
            reader.pause_reading()

    def detach(self, reader: Pausable) -> None:
        if reader in self._readers:
            self._readers.remove(reader)
