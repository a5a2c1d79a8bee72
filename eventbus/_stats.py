"""Per-handler counters: plain integers bumped on the hot path, read by reports and metrics."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field

# Upper bounds (seconds) of the handler latency histogram's buckets; the last bucket is +Inf.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


# Upper bounds (messages) of the batch size histogram's buckets; the last bucket is +Inf.
BATCH_SIZE_BUCKETS: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000)


def _no_backlog() -> int:
    return 0


COUNTERS = (
    *("received", "handled", "failed", "rejected", "retried", "dropped", "dead_lettered", "dead_letter_failed"),
    "abandoned",
)


@dataclass(slots=True)
class HandlerStats:
    """What happened to the messages routed to one handler.

    Every received message ends up in exactly one of handled, failed, rejected, dropped or
    abandoned, or is still queued or in flight (``backlog``, which the handler's worker reports).
    So ``received`` is derived from them rather than counted: one update less per message.
    """

    failed: int = 0  # raised on the last attempt (then dead-lettered)
    rejected: int = 0  # raised Reject / bad payload / over the size cap (then dead-lettered)
    retried: int = 0
    dropped: int = 0  # refused or evicted by a full inbox
    dead_lettered: int = 0
    # failed or rejected, but the dead letter could not be written (refused by an ACL, Redis down):
    # lost for pub/sub; a stream entry stays pending instead
    dead_letter_failed: int = 0
    abandoned: int = 0  # still queued or running when the shutdown grace period ran out
    latency_total: float = 0.0  # seconds spent in the handler, summed over handled messages
    # Handled messages per latency bucket (not cumulative; index len(LATENCY_BUCKETS) is +Inf).
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    backlog: Callable[[], int] = field(default=_no_backlog, repr=False, compare=False)
    # Batch handlers only: calls of the handler, and how many messages each one carried (batches
    # per size bucket, not cumulative; index len(BATCH_SIZE_BUCKETS) is +Inf).
    batching: bool = False
    batches: int = 0
    batch_size_total: int = 0
    batch_size_buckets: list[int] = field(default_factory=lambda: [0] * (len(BATCH_SIZE_BUCKETS) + 1))

    @property
    def handled(self) -> int:
        # Each handled message is counted once, in its latency bucket.
        return sum(self.latency_buckets)

    @property
    def received(self) -> int:
        return self.handled + self.failed + self.rejected + self.dropped + self.abandoned + self.backlog()

    def observe(self, seconds: float) -> None:
        """Count one handled message that took ``seconds``."""
        self.latency_total += seconds
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def observe_batch(self, seconds: float, size: int) -> None:
        """Count one call of a batch handler that handled ``size`` messages in ``seconds``: each of
        them spent that long in the handler."""
        self.latency_total += seconds * size
        self.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += size
        self.batches += 1
        self.batch_size_total += size
        self.batch_size_buckets[bisect_left(BATCH_SIZE_BUCKETS, size)] += 1

    def as_dict(self) -> dict[str, float]:
        counters: dict[str, float] = {name: getattr(self, name) for name in COUNTERS}
        counters["latency_total"] = self.latency_total
        if self.batching:
            counters["batches"] = self.batches
            counters["batch_size_total"] = self.batch_size_total
        return counters


@dataclass(slots=True)
class RecoveryStats:
    """What recovery did on one recoverable channel (eventbus._recovery)."""

    recovered: int = 0  # missed messages read back from the history and delivered
    unrecovered: int = 0  # missed messages the history no longer had (trimmed, expired)
    # the history was lost (its epoch changed) after a gap: what it held past our position is
    # gone and how many that was is unknown
    history_lost: int = 0
    foreign: int = 0  # messages published without the history (a plain PUBLISH): unrecoverable
    duplicates: int = 0  # messages that arrived again (live after their recovery): skipped
    recoveries: int = 0  # completed reads of a missed range
    recovery_seconds: float = 0.0  # time from a gap's detection to the missed range delivered
    resumed: int = 0  # messages published while a resumed handler was down, delivered after its restart
    unclean_resumes: int = 0  # resumes after a crash: the last interval's messages are handled again

    def as_dict(self) -> dict[str, float]:
        return {
            "recovered": self.recovered,
            "unrecovered": self.unrecovered,
            "history_lost": self.history_lost,
            "foreign": self.foreign,
            "duplicates": self.duplicates,
            "recoveries": self.recoveries,
            "recovery_seconds": round(self.recovery_seconds, 3),
            "resumed": self.resumed,
            "unclean_resumes": self.unclean_resumes,
        }


@dataclass(slots=True)
class RequestStats:
    """Requests this process made, and replies its handlers sent."""

    sent: int = 0  # requests published
    answered: int = 0  # requests that got their reply (request) or gathered theirs (request_all)
    timeouts: int = 0
    no_responder: int = 0
    remote_errors: int = 0  # replies that carried the responder's error
    interrupted: int = 0  # failed because the reply connection was lost
    late_replies: int = 0  # replies for a request that was already answered or timed out: dropped
    replies_sent: int = 0  # replies this process's handlers sent
    reply_failures: int = 0  # replies that could not be published (logged)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(slots=True)
class BusStats:
    """Counters of the whole runner, plus each handler's."""

    messages: int = 0  # messages read from the subscription connection
    unrouted: int = 0  # messages no handler subscribed to (e.g. after an unsubscribe race)
    oversized: int = 0
    reconnects: int = 0
    # Reconnects that Redis's client-output-buffer-limit most likely caused (a heuristic: see
    # eventbus._backends.subscriber); each lost at least the message that passed the limit.
    output_buffer_closes: int = 0
    gap_seconds: float = 0.0  # time spent disconnected: pub/sub messages of that time are lost
    dead_letters_trimmed: int = 0  # oldest entries this process removed to keep the dead-letter stream in budget
    handlers: dict[str, HandlerStats] = field(default_factory=dict)
    channels: dict[str, RecoveryStats] = field(default_factory=dict)  # per recoverable channel

    def recovery(self, channel: str) -> RecoveryStats:
        """The recovery counters of ``channel`` (made on first use)."""
        stats = self.channels.get(channel)
        if stats is None:
            stats = self.channels[channel] = RecoveryStats()
        return stats

    requests: RequestStats = field(default_factory=RequestStats)

    def as_dict(self) -> dict[str, object]:
        return {
            "messages": self.messages,
            "unrouted": self.unrouted,
            "oversized": self.oversized,
            "reconnects": self.reconnects,
            "output_buffer_closes": self.output_buffer_closes,
            "gap_seconds": round(self.gap_seconds, 3),
            "dead_letters_trimmed": self.dead_letters_trimmed,
            "handlers": {name: s.as_dict() for name, s in self.handlers.items()},
            "channels": {name: s.as_dict() for name, s in self.channels.items()},
            "requests": self.requests.as_dict(),
        }
