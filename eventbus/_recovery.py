"""Recovering what a subscriber missed on a recoverable channel, in order, each message once.

Every message of a recoverable channel carries its offset and its history's epoch
(eventbus._history). Per subscription and channel a :class:`Track` remembers the last offset
delivered to the handlers. A message whose offset is the next one is delivered at once (the
common case: a compare and an assignment). Anything else is a gap:

- the subscription connection was replaced (a reconnect, a half-open connection found by the
  ping, Redis dropping us past its output-buffer limit): the subscriber says so after it has
  resubscribed, and every track of that connection reads the history after its position;
- an offset jumps (a message lost on its way, whatever the cause): that track reads the range.

While a track recovers, live messages wait in its buffer. Subscribing comes first and reading the
history second, so together they cover everything: the history is delivered after the position,
then the buffer merged by offset (what both hold is delivered once). When the history no longer
has part of the range (trimmed, expired) or was lost (another epoch), a WARNING names the
channel, how many messages were not recovered and their offsets, and the counters of
``BusStats.channels`` count them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from redis.exceptions import NoPermissionError

from eventbus._glob import glob_match
from eventbus._history import History, HistoryPage, SavedPosition, is_failover, parse_envelope
from eventbus._logs import LineLimit
from eventbus._message import Message, Position
from eventbus._names import encode_name
from eventbus._resume import SAVE_INTERVAL, PositionKeeper, Resumer, TrackedMessage
from eventbus._stats import BusStats, RecoveryStats
from eventbus._worker import MESSAGE_OVERHEAD

log = logging.getLogger("eventbus.recovery")
T = TypeVar("T")

# Entries per history read: large enough that a backlog of 100,000 is ten round trips.
PAGE = 10_000
# A read that fails (Redis went away again) is retried this many times before the range is
# reported as not recovered.
READ_ATTEMPTS = 5

CHANNEL = 0
PATTERN = 1
SHARDED = 2
KIND_NAMES = {"channel": CHANNEL, "pattern": PATTERN, "sharded": SHARDED}

TrackKey = tuple[int, bytes, bytes]
# The epoch of a position taken when the channel had no history: any history that begins is read
# from its first message.
NO_HISTORY = b""
# (workers, channel, pattern, payloads, payload cap): eventbus._dispatch.deliver_payloads
DeliverPayloads = Callable[[tuple[Any, ...], str, "str | None", list[bytes], "int | None"], None]


def _deliver_payloads(
    workers: tuple[Any, ...], channel: str, pattern: str | None, payloads: list[bytes], cap: int | None
) -> None:
    for payload in payloads:
        msg = Message(channel, payload, pattern)
        for worker in workers:
            if cap is not None and len(payload) > cap:
                worker.refuse(msg, f"payload of {len(payload)} bytes exceeds the cap of {cap}")
            else:
                worker.put(msg)


class Track(Position):
    """One channel as one subscription receives it: its position and, while recovering, a buffer."""

    buffer: list[tuple[int, bytes, Message]] | None

    def __init__(
        self, kind: int, channel: str, pattern: str | None, workers: Sequence[Any], stats: RecoveryStats
    ) -> None:
        super().__init__()
        self.kind = kind
        self.channel = channel
        self.pattern = pattern
        self.workers = tuple(workers)
        self.stats = stats
        self.declared = False  # subscribed as a recoverable Channel: positioned at start
        # (Position: epoch, None until the first message or the start gives one; last, the last
        # offset delivered; buffer, while recovering the live (offset, epoch, message) that wait.)
        self.warned = False  # the unrecoverable-publisher warning, once per track
        # The resumed handlers among the workers (eventbus._resume): their messages carry offsets.
        self.keeper_of: dict[Any, PositionKeeper] = {}
        # A pattern's channel first heard of while the pattern looks for its channels: its live
        # messages wait until that search says where it stands.
        self.undiscovered = False
        # The connection was lost and the track waits for the new one to resubscribe.
        self.reconnecting = False
        # Workers whose full inbox dropped a message of this channel, and the last offset each one
        # has: live messages pass them by while they read the rest back (Recovery._catch_up).
        self.behind: dict[Any, int] = {}


class Recovery:
    """The tracks of one runner and the tasks that recover them (see the module docstring)."""

    def __init__(
        self,
        history: History,
        stats: BusStats,
        max_payload: int | None = None,
        deliver_payloads: DeliverPayloads | None = None,
    ) -> None:
        self.history = history
        # How a replay reaches the workers: the dispatcher's compiled loop, given by the runner.
        self.deliver_payloads = deliver_payloads or _deliver_payloads
        self.stats = stats
        self.max_payload = max_payload
        self.tracks: dict[TrackKey, Track] = {}
        # The channel and sharded tracks again, by channel: the dispatcher's fast path looks here.
        self.by_channel: dict[bytes, Position] = {}
        self.by_sharded: dict[bytes, Position] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.lines = LineLimit(log, "recovery")
        self._closing = False
        self.on_idle: Callable[[], None] = _nothing  # set by the runner: its drain waits on it
        self.resumer: Resumer | None = None  # resumed handlers' positions (set by the runner)
        # The pattern subscriptions (key, glob, workers): they look for their channels with a
        # history at start and after each reconnect (:meth:`_discover`).
        self.patterns: list[tuple[bytes, str, tuple[Any, ...]]] = []
        self.discovering: set[bytes] = set()
        # The offset being handed to the workers one message at a time, where track.last does not
        # say it (a replay's message too big for a chunk): what a drop during it refers to.
        self._delivering: int | None = None
        self._told_no_scan = False

    # -- set-up ------------------------------------------------------------------------------

    def declare(self, kind: str, channel: str, workers: Sequence[Any]) -> None:
        """A channel subscribed as a recoverable :class:`~eventbus.Channel`: positioned at start
        (at the history's top), so that a gap before its first message is recovered too."""
        key = (KIND_NAMES[kind], b"", encode_name(channel))
        track = self.tracks.get(key)
        if track is None:
            track = self._track(key, channel, None, workers)
        track.declared = True
        track.buffer = []  # until start() has read the position

    def declare_pattern(self, pattern: str, workers: Sequence[Any]) -> None:
        """A pattern subscription: it recovers every matching channel that has a history, also
        one it never received a message from (found by :meth:`_discover`)."""
        key = encode_name(pattern)
        self.patterns = [entry for entry in self.patterns if entry[0] != key]
        self.patterns.append((key, pattern, tuple(workers)))

    def resume(self, kind: str, channel: str, worker: Any, keeper: PositionKeeper) -> None:
        """``worker``'s handler resumes on a declared channel: at start it first gets what was
        published since its saved position, and its position follows what it settles."""
        key = (KIND_NAMES[kind], b"", encode_name(channel))
        track = self.tracks[key]
        track.keeper_of[worker] = keeper
        self._fast_path(track)  # off it: every message must reach the keepers with its offset

    async def start(self) -> None:
        """Subscribed: read each declared channel's position (its live messages wait meanwhile).

        Returns once every position is known, so that what is published after a runner's start
        returns is after its position.
        """
        tracks = [track for track in self.tracks.values() if track.declared and track.epoch is None]
        searching = [self._discover(at_start=True)] if self.patterns else []
        await asyncio.gather(*(self._position(track) for track in tracks), *searching)

    def connection_lost(self, kinds: Sequence[int]) -> None:
        """A subscription connection was lost: until its replacement has resubscribed and the
        missed range is read, what arrives waits. (The new connection may deliver messages before
        :meth:`resubscribed` is told; delivered at once, a first message of a history that began
        again while we were away would hide that the old one was lost.)"""
        for track in self.tracks.values():
            if track.kind in kinds and track.buffer is None and track.epoch is not None:
                track.buffer = []
                track.reconnecting = True

    def resubscribed(self, kinds: Sequence[int]) -> None:
        """A subscription connection was replaced: every track it carries reads what it missed."""
        for track in list(self.tracks.values()):
            if track.kind not in kinds or track.epoch is None:
                continue
            if track.reconnecting or track.buffer is None:
                track.reconnecting = False
                if track.buffer is None:
                    track.buffer = []
                self._spawn(self._recover(track, "a reconnect", time.monotonic()))
        if PATTERN in kinds and self.patterns:
            # A channel first published during the gap has no track yet: look for it.
            self._spawn(self._discover(at_start=False))

    def busy(self) -> bool:
        """A recovery (or the reading of a position) is under way."""
        return bool(self.tasks)

    async def close(self) -> None:
        """Reading has stopped: recoveries under way end here (their messages stay in the history)."""
        self._closing = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # -- the reader's side (synchronous, one call per message of a recoverable channel) --------

    def accept(
        self,
        kind: int,
        pattern_key: bytes,
        channel_key: bytes,
        channel: str,
        pattern: str | None,
        data: bytes,
        workers: Sequence[Any],
        declared: bool,
    ) -> bool:
        """Take a message over if it has an envelope (True); False: deliver it as a plain one."""
        env = parse_envelope(data)
        key = (kind, pattern_key, channel_key)
        track = self.tracks.get(key)
        if env is None:
            if declared or track is not None:
                self._foreign(track, channel, workers, kind, key)
            return False
        if track is None:
            track = self._track(key, channel, pattern, workers)
            if kind == PATTERN and pattern_key in self.discovering:
                track.undiscovered, track.buffer = True, []
        if track.keeper_of:
            msg: Message = TrackedMessage(channel, env.payload, pattern, env.offset, env.epoch)
        else:
            msg = Message(channel, env.payload, pattern)
        self._advance(track, env.offset, env.epoch, msg)
        return True

    def _track(self, key: TrackKey, channel: str, pattern: str | None, workers: Sequence[Any]) -> Track:
        track = self.tracks[key] = Track(key[0], channel, pattern, workers, self.stats.recovery(channel))
        if key[0] == CHANNEL:
            self.by_channel[key[2]] = track
        elif key[0] == SHARDED:
            self.by_sharded[key[2]] = track
        return track

    def _advance(self, track: Track, offset: int, epoch: bytes, msg: Message) -> None:
        if track.buffer is not None:
            track.buffer.append((offset, epoch, msg))
            return
        if epoch == track.epoch:
            if offset == track.last + 1:
                track.last = offset
                self._deliver(track, msg)
            elif offset <= track.last:
                track.stats.duplicates += 1
            else:
                track.buffer = [(offset, epoch, msg)]
                reason = f"offset {offset} after {track.last}"
                self._spawn(self._recover(track, reason, time.monotonic()))
            return
        failover = is_failover(epoch)
        if track.epoch is None or (offset == 1 and not failover):
            # A first message, or a history that began again (its TTL passed while idle, Redis
            # restarted): nothing before it was missed.
            track.epoch, track.last = epoch, offset
            self._deliver(track, msg)
            return
        if failover and track.epoch:
            # A replica took over with a copy that may lack the old history's newest messages, some
            # perhaps never received here: the recovery reads the new history and reports that.
            track.buffer = [(offset, epoch, msg)]
            reason = "a failover to a replica, or the history lost under a publisher"
            self._spawn(self._recover(track, reason, time.monotonic()))
            return
        # A history that began again while we were not looking: read it from its start.
        track.epoch, track.last = epoch, 0
        track.buffer = [(offset, epoch, msg)]
        self._spawn(self._recover(track, f"a new history (offset {offset})", time.monotonic()))

    def _deliver(self, track: Track, msg: Message) -> None:
        cap = self.max_payload
        if track.keeper_of and isinstance(msg, TrackedMessage):
            self._deliver_tracked(track, msg)
            return
        for worker in _receiving(track):
            if cap is not None and len(msg.data) > cap:
                worker.refuse(msg, f"payload of {len(msg.data)} bytes exceeds the cap of {cap}")
            else:
                worker.put(msg)

    def _deliver_tracked(self, track: Track, msg: TrackedMessage, workers: Sequence[Any] | None = None) -> None:
        """Deliver, telling each resumed handler's keeper whether its inbox took the message."""
        cap = self.max_payload
        for worker in _receiving(track) if workers is None else workers:
            keeper = track.keeper_of.get(worker)
            if cap is not None and len(msg.data) > cap:
                worker.refuse(msg, f"payload of {len(msg.data)} bytes exceeds the cap of {cap}")
                if keeper is not None:
                    keeper.passed(msg.offset, msg.epoch)
                continue
            if keeper is None:
                worker.put(msg)
                continue
            if msg.offset <= keeper.last and msg.epoch == keeper.epoch:
                # Its handler had it already (in its previous run, a run that overlapped this one).
                track.stats.duplicates += 1
                continue
            dropped = worker.stats.dropped
            worker.put(msg)
            if worker.stats.dropped == dropped:
                keeper.delivered(msg.offset, msg.epoch)
            elif worker not in track.behind:  # dropped for good (bigger than the whole inbox)
                keeper.passed(msg.offset, msg.epoch)

    # -- a handler's own drops -------------------------------------------------------------------

    def dropped(self, worker: Any, msg: Message) -> None:
        """``worker``'s full inbox dropped ``msg`` (overflow ``drop_newest``): on a recoverable
        channel, the worker reads it, and what follows it, back from the history once it has room,
        in order, while the channel's live messages pass it by."""
        track = self._track_of(worker, msg)
        if track is None or track.epoch is None or worker in track.behind:
            return
        if len(msg.data) + MESSAGE_OVERHEAD > worker.budget:
            return  # bigger than the whole inbox: it can never be delivered (counted as dropped)
        if isinstance(msg, TrackedMessage):
            offset = msg.offset
        elif self._delivering is not None:
            offset = self._delivering
        else:
            offset = track.last
        track.behind[worker] = offset - 1
        self._fast_path(track)
        self._spawn(self._catch_up(track, worker, time.monotonic()))

    def _track_of(self, worker: Any, msg: Message) -> Track | None:
        channel_key = encode_name(msg.channel)
        if msg.pattern is not None:
            return self.tracks.get((PATTERN, encode_name(msg.pattern), channel_key))
        for kind in (CHANNEL, SHARDED):
            track = self.tracks.get((kind, b"", channel_key))
            if track is not None and worker in track.workers:
                return track
        return None

    def _fast_path(self, track: Track) -> None:
        """Put a channel on the dispatcher's fast path, or off it while any of its workers is
        behind or resumed (those need each message to come through here)."""
        table = self.by_channel if track.kind == CHANNEL else self.by_sharded if track.kind == SHARDED else None
        if table is None:
            return
        key = encode_name(track.channel)
        if track.behind or track.keeper_of:
            table.pop(key, None)
        else:
            table[key] = track

    async def _catch_up(self, track: Track, worker: Any, began: float) -> None:
        """Read what ``worker`` dropped, and everything after it, back from the history until it has
        caught up with the channel's live position; then it takes live messages again."""
        after = track.behind[worker]
        recovered = 0
        missing: list[tuple[int, int | None]] = []
        epoch = track.epoch
        try:
            while True:
                position = track.behind[worker]
                if position >= track.last or track.epoch != epoch:
                    break  # caught up (synchronously with the live side: nothing falls between)
                await _room((worker,))
                page = await self._read(track, position + 1, PAGE)
                if track.epoch != epoch:
                    break  # the channel's own recovery reports a lost history
                if page is None:
                    missing.append((position + 1, None))
                    break
                start = page.first if page.payloads else page.top + 1
                if start > position + 1:
                    end = min(start - 1, track.last)
                    missing.append((position + 1, end))
                    track.stats.unrecovered += end - position
                    track.behind[worker] = position = end
                upto = min(track.last, page.first + len(page.payloads) - 1)
                run = page.payloads[: max(0, upto - page.first + 1)] if page.payloads else []
                if not run:
                    continue
                recovered += await self._deliver_in_room(track, page.first, run, catching_up=worker)
        finally:
            caught_up = track.behind.pop(worker, None)
            if caught_up is not None and caught_up < track.last and track.epoch == epoch and not missing:
                missing.append((caught_up + 1, None))  # cancelled (a stop) or the history failed us
            self._fast_path(track)
            track.stats.recovered += recovered
            track.stats.recoveries += 1
            track.stats.recovery_seconds += time.monotonic() - began
            self._report(track, f"dropped by handler {worker.name}'s full inbox", after, recovered, missing, None)

    async def _deliver_in_room(self, track: Track, first: int, run: list[bytes], catching_up: Any = None) -> int:
        """Hand ``run`` (offsets ``first``...) a chunk at a time, each chunk no more than the
        inboxes have room for, so that a replay never overflows an inbox; returns how many were
        handed over. To the channel's receiving workers, moving its position along; or to the one
        worker ``catching_up``, moving that worker's."""
        i = 0
        while i < len(run):
            # Looked at again for each chunk: a worker may have fallen behind meanwhile.
            workers = (catching_up,) if catching_up is not None else _receiving(track)
            await _room(workers)
            j = _fit(workers, run, i)
            if j == i:
                size = len(run[i]) + MESSAGE_OVERHEAD
                if all(size <= w.budget for w in workers):
                    # Bigger than half an inbox: wait until there is room for it whole.
                    await _room(workers, size)
                    continue
                # Bigger than a whole inbox: that inbox drops it (counted), the others take it.
                self._delivering = first + i
                try:
                    self._deliver_run(track, workers, first + i, run[i : i + 1])
                finally:
                    self._delivering = None
                j = i + 1
            else:
                self._deliver_run(track, workers, first + i, run[i:j] if j - i < len(run) else run)
            if catching_up is None:
                track.last = first + j - 1
            else:
                track.behind[catching_up] = first + j - 1
            i = j
        return len(run)

    def _deliver_run(self, track: Track, workers: tuple[Any, ...], first: int, run: list[bytes]) -> None:
        if track.keeper_of:
            for i, payload in enumerate(run):
                msg = TrackedMessage(track.channel, payload, track.pattern, first + i, track.epoch or b"")
                self._deliver_tracked(track, msg, workers)
        else:
            self.deliver_payloads(workers, track.channel, track.pattern, run, self.max_payload)

    def _foreign(self, track: Track | None, channel: str, workers: Sequence[Any], kind: int, key: TrackKey) -> None:
        if track is None:
            track = self._track(key, channel, None, workers)
        track.stats.foreign += 1
        if not track.warned:
            track.warned = True
            log.warning(
                "a message on recoverable channel %r was published without its history (a plain PUBLISH, "
                "redis-cli?): it is delivered, but it has no offset and cannot be recovered after a gap; "
                "publish with eventbus (bus.publish(Channel(...)), eventbus publish --history N); counted "
                "as eventbus_channel_foreign, warned once",
                channel,
            )

    # -- recovering --------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        if self._closing:
            coro.close()
            return
        task = asyncio.get_running_loop().create_task(coro, name="eventbus:recovery")
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not self.tasks:
            self.on_idle()  # a drain waiting for the recoveries to end looks again

    async def _position(self, track: Track) -> None:
        """Start where the history is now (the subscription is already live)."""
        try:
            page = await self._read(track, 0, 0)
            if page is not None and page.epoch and track.epoch is None:
                # What arrived since the subscription began is ours even if the history's top
                # already counts it: start before the first of it.
                ours = [offset for offset, epoch, _ in track.buffer or () if epoch == page.epoch]
                track.epoch, track.last = page.epoch, min(page.top, min(ours, default=page.top + 1) - 1)
            elif page is not None and track.epoch is None:
                # No history yet: whatever history begins, we want it from its first message.
                track.epoch, track.last = NO_HISTORY, 0
            if track.keeper_of and track.epoch is not None:
                # Before the live messages that wait: each resumed handler's share of the past.
                await asyncio.gather(*(self._resume(track, w, k) for w, k in track.keeper_of.items()))
        finally:
            self._flush(track)

    async def _discover(self, *, at_start: bool) -> None:
        """Find the channels with a history that the pattern subscriptions match.

        At start, a channel without a track is positioned at its top, as a declared channel is:
        what was published before the subscription is not ours. After a reconnect, a channel
        without a track was first published after the start (the start's search would have
        found it otherwise) and never reached us: everything in its history is ours, and is
        read from its first message.
        """
        keys = {key for key, _, _ in self.patterns}
        self.discovering |= keys
        try:
            found = await self._channels()
        finally:
            self.discovering -= keys
        for pattern_key, pattern, workers in self.patterns:
            matching = {name: (epoch, top) for name, epoch, top in found if glob_match(pattern_key, encode_name(name))}
            for name, (epoch, top) in matching.items():
                key = (PATTERN, pattern_key, encode_name(name))
                track = self.tracks.get(key)
                if track is None:
                    track = self._track(key, name, pattern, workers)
                    if at_start:
                        track.epoch, track.last = epoch, top
                        continue
                    track.undiscovered, track.buffer = True, []
                if not track.undiscovered:
                    continue
                track.undiscovered = False
                if at_start:
                    ours = [offset for offset, e, _ in track.buffer or () if e == epoch]
                    track.epoch, track.last = epoch, min(top, min(ours, default=top + 1) - 1)
                    self._flush(track)
                else:
                    track.epoch, track.last = NO_HISTORY, 0
                    self._spawn(self._recover(track, "a channel first published during a gap", time.monotonic()))
        for track in list(self.tracks.values()):
            if track.undiscovered and track.pattern is not None and encode_name(track.pattern) in keys:
                # First published after the search: everything of it arrived live.
                track.undiscovered = False
                self._flush(track)

    async def _channels(self) -> list[tuple[str, bytes, int]]:
        found = await self._retrying(
            "search failed", "looking for the channels with a history that the patterns match", self._listed
        )
        if found is not None:
            return found
        log.warning(
            "NOT recovered: the channels with a history that the patterns %s match could not be listed: a channel "
            "they never received a message from is not recovered",
            ", ".join(repr(p) for _, p, _ in self.patterns),
        )
        return []

    async def _resume(self, track: Track, worker: Any, keeper: PositionKeeper) -> None:
        """Deliver to one resumed handler what was published after its saved position and up to
        where the channel's live delivery starts (``track.last``)."""
        resumer = self.resumer
        assert resumer is not None and track.epoch is not None
        claimed = await self._retrying(
            "claim failed", f"reading the saved position of handler {keeper.handler}", lambda: _claimed(resumer, keeper)
        )
        if claimed is None:
            log.warning(
                "NOT recovered: handler %s could not read its saved position on %r: it starts at offset %d, and what "
                "was published while it was down is not delivered to it",
                keeper.handler,
                track.channel,
                track.last,
            )
        saved = claimed[0] if claimed is not None else None
        if saved is None:
            if claimed is not None:  # a first start: nothing of the past is ours
                log.info(
                    "handler %s (identity %r) starts on %r at offset %d: no saved position (a first start)",
                    keeper.handler,
                    keeper.identity,
                    track.channel,
                    track.last,
                )
            keeper.begin(track.epoch, track.last)
            return
        keeper.begin(saved.epoch, saved.offset)
        if saved.epoch == track.epoch and saved.offset >= track.last:
            return  # nothing was published while it was down
        if not saved.clean:
            track.stats.unclean_resumes += 1
        replay = Track(track.kind, track.channel, None, (worker,), track.stats)
        replay.keeper_of[worker] = keeper
        replay.epoch, replay.last, replay.buffer = saved.epoch, saved.offset, []
        reason = f"handler {keeper.handler} resuming after a {'stop' if saved.clean else 'crash'}"
        if not saved.clean:
            reason += f"; what it handled in its last {SAVE_INTERVAL:g}s before the crash is handled again"
        before = track.stats.recovered
        await self._recover(replay, reason, time.monotonic(), until=track.last)
        track.stats.resumed += track.stats.recovered - before
        if keeper.epoch != replay.epoch or (not keeper.outstanding and keeper.last < replay.last):
            # Nothing of the range reached the handler (the history lost it, or trimmed it): the
            # range is reported, and the position moves past it.
            keeper.begin(replay.epoch or b"", replay.last)

    async def _recover(self, track: Track, reason: str, began: float, until: int | None = None) -> None:
        after = track.last
        recovered = 0
        lost_after: int | None = None
        missing: list[tuple[int, int | None]] = []
        ahead: asyncio.Task[HistoryPage | None] | None = None
        try:
            first = after + 1
            page = await self._read(track, first, PAGE)
            while True:
                if page is None:  # Redis did not answer: everything asked for is reported
                    missing.append((first, None))
                    break
                if page.epoch != track.epoch:
                    if track.epoch:  # a history we had a position in is gone, past where we got in it
                        lost_after = track.last
                        track.stats.history_lost += 1
                    if not page.epoch:
                        track.epoch, track.last = NO_HISTORY, 0  # the next history, from its start
                        break
                    track.epoch, track.last, first = page.epoch, 0, 1
                    page = await self._read(track, first, PAGE)
                    continue
                payloads = page.payloads
                if len(payloads) == PAGE:
                    # The next page is read while this one is delivered: the replay runs at the
                    # handlers' pace, not at that of the reads.
                    ahead = asyncio.get_running_loop().create_task(self._read(track, page.first + PAGE, PAGE))
                    await asyncio.sleep(0)  # let it send the read before this page keeps the loop busy
                # What the buffer holds is delivered from there, in order: read only up to it.
                live = min((o for o, e, _ in track.buffer or () if e == track.epoch), default=page.top + 1)
                if until is not None:
                    live = min(live, until + 1)
                start = min(page.first if payloads else page.top + 1, live)
                if start > first:
                    missing.append((first, start - 1))
                    track.stats.unrecovered += start - first
                    track.last = start - 1
                taken = max(0, min(len(payloads), live - page.first))
                if taken:
                    run = payloads[:taken] if taken < len(payloads) else payloads
                    await self._deliver_in_room(track, page.first, run)
                recovered += taken
                if until is not None and track.last >= until:
                    break
                if ahead is None and page.superseded and taken == len(payloads):
                    # What a promoted replica kept of our epoch, read to its end: on to the current
                    # epoch, whose first read reports what the old one may have lost past it.
                    first = track.last + 1
                    page = await self._read(track, first, PAGE)
                    continue
                if ahead is None or taken < PAGE:
                    break
                first = track.last + 1
                page, ahead = await ahead, None
        finally:
            if ahead is not None:
                ahead.cancel()
            track.stats.recovered += recovered
            track.stats.recoveries += 1
            track.stats.recovery_seconds += time.monotonic() - began
            self._report(track, reason, after, recovered, missing, lost_after)
            self._flush(track)

    async def _listed(self) -> list[tuple[str, bytes, int]]:
        try:
            return await self.history.channels()
        except NoPermissionError as exc:
            # A least-privilege user without +scan: say so once; asking again will not help.
            if not self._told_no_scan:
                self._told_no_scan = True
                log.warning(
                    "patterns %s cannot look for the channels with a history they match (%s; grant +scan +xrevrange "
                    "%%R~eventbus:history:*, docs/security.md): a channel they have not received a message "
                    "from is not recovered after a gap",
                    ", ".join(repr(p) for _, p, _ in self.patterns),
                    exc,
                )
            return []

    async def _read(self, track: Track, first: int, count: int) -> HistoryPage | None:
        return await self._retrying(
            "read failed",
            f"reading the history of {track.channel!r}",
            lambda: self.history.read(track.channel, first, count, track.epoch or b""),
        )

    async def _retrying(self, reason: str, what: str, call: Callable[[], Awaitable[T]]) -> T | None:
        """``call()``, tried :data:`READ_ATTEMPTS` times while Redis fails; None if it never answered."""
        for attempt in range(1, READ_ATTEMPTS + 1):
            try:
                return await call()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis errors of any kind: try again, then report
                if self.lines.allow(reason):
                    log.warning("%s failed (attempt %d of %d): %s", what, attempt, READ_ATTEMPTS, exc)
                await asyncio.sleep(0.2 * attempt)
        return None

    def _flush(self, track: Track) -> None:
        """The recovery is over: merge the live messages that waited, by offset."""
        buffer, track.buffer = track.buffer or [], None
        if self._closing:
            return
        buffer.sort(key=_offset)
        for offset, epoch, msg in buffer:
            self._advance(track, offset, epoch, msg)

    def _report(
        self,
        track: Track,
        reason: str,
        after: int,
        recovered: int,
        missing: list[tuple[int, int | None]],
        lost_after: int | None,
    ) -> None:
        where = repr(track.channel) if track.pattern is None else f"{track.channel!r} (via {track.pattern!r})"
        if recovered or not (missing or lost_after is not None):
            log.info(
                "recovered %d message(s) on %s missed after offset %d (%s); %d not recovered",
                recovered,
                where,
                after,
                reason,
                sum(0 if end is None else end - start + 1 for start, end in missing),
            )
        for start, end in missing:
            if end is None:
                log.warning(
                    "NOT recovered: messages on %s from offset %d on: Redis did not answer the history read",
                    where,
                    start,
                )
            else:
                log.warning(
                    "NOT recovered: %d message(s) on %s, offsets %d-%d (%s): the history no longer has them "
                    "(trimmed to its last `history` entries, or expired)",
                    end - start + 1,
                    where,
                    start,
                    end,
                    reason,
                )
        if lost_after is not None:
            log.warning(
                "NOT recovered: messages on %s published after offset %d (%s): the channel's history was lost "
                "(its epoch changed: Redis restarted without persistence, a replica without its newest messages "
                "took over, or the history expired); how many is unknown",
                where,
                lost_after,
                reason,
            )


def _nothing() -> None:
    pass


def _receiving(track: Track) -> tuple[Any, ...]:
    """The workers that take the channel's messages as they come (not those catching up)."""
    if not track.behind:
        return track.workers
    return tuple(worker for worker in track.workers if worker not in track.behind)


async def _room(workers: Sequence[Any], size: int = 0) -> None:
    # A replay must not overflow the inboxes it fills: wait until each is at most half full (and
    # has room for a message of ``size`` bytes). The workers signal nothing when they drain:
    # polling, only while a replay is held back.
    while any(  # noqa: ASYNC110
        w.queued_bytes > min(w.budget // 2, w.budget - size) or len(w.inbox) > w.max_messages // 2 for w in workers
    ):
        await asyncio.sleep(0.005)


def _fit(workers: Sequence[Any], run: list[bytes], start: int) -> int:
    """The end of the longest chunk of ``run`` from ``start`` that every inbox has room for."""
    room = min((w.budget - w.queued_bytes for w in workers), default=0)
    count = min((w.max_messages - len(w.inbox) for w in workers), default=0)
    limit = min(len(run), start + max(0, count))
    if limit == len(run) and sum(map(len, run[start:] if start else run)) + MESSAGE_OVERHEAD * (limit - start) <= room:
        return limit  # the common case, a page that fits whole: summed in C, not message by message
    end, size = start, 0
    while end < limit:
        size += len(run[end]) + MESSAGE_OVERHEAD
        if size > room:
            break
        end += 1
    return end


async def _claimed(resumer: Resumer, keeper: PositionKeeper) -> tuple[SavedPosition | None]:
    # In a tuple: a claim that found no saved position (None) is an answer, not a failure.
    return (await resumer.claim(keeper),)


def _offset(item: tuple[int, bytes, Message]) -> int:
    return item[0]
