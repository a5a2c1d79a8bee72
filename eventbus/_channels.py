"""``Channel``: a channel declared once, with its history, and used by publishers and handlers alike.

A plain string names a plain Pub/Sub channel (at-most-once). A :class:`Channel` with ``history``
is *recoverable*: every publish is appended to a bounded history in Redis and published with its
offset, so a subscriber that missed messages during a gap (a reconnect, a stalled connection)
reads them back in order (see eventbus._history and eventbus._recovery).
"""

from __future__ import annotations

from dataclasses import dataclass

from eventbus._errors import ConfigError


@dataclass(frozen=True, slots=True)
class Channel:
    """A channel and how much of its past Redis keeps.

    name:    the Pub/Sub channel (what ``PUBLISH``/``SUBSCRIBE`` name).
    history: how many of the latest messages Redis keeps for recovery (0: none, a plain channel).
    ttl:     seconds the history is kept after the channel's last publish (None: until trimmed by
             ``history``); an idle channel's history, and its epoch, go away together after it.
    sharded: publish with SPUBLISH and subscribe with SSUBSCRIBE (sharded pub/sub, Redis 7).
    """

    name: str
    history: int = 0
    ttl: float | None = None
    sharded: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"a channel name must be a non-empty string, got {self.name!r}")
        if isinstance(self.history, bool) or not isinstance(self.history, int) or self.history < 0:
            raise ConfigError(f"history must be an integer >= 0 (messages kept), got {self.history!r}")
        if self.ttl is not None and (
            isinstance(self.ttl, bool) or not isinstance(self.ttl, (int, float)) or not self.ttl > 0
        ):
            raise ConfigError(f"ttl must be None or a number of seconds > 0, got {self.ttl!r}")
        if self.ttl is not None and not self.history:
            raise ConfigError(f"channel {self.name!r}: ttl without history keeps nothing; give history=N too")
        if not isinstance(self.sharded, bool):
            raise ConfigError(f"sharded must be True or False, got {self.sharded!r}")

    @property
    def recoverable(self) -> bool:
        return self.history > 0

    def __str__(self) -> str:
        return self.name


def channel_name(channel: str | Channel) -> str:
    """The name a string or a :class:`Channel` stands for."""
    return channel.name if isinstance(channel, Channel) else channel
