"""Durable, load-shared processing on Redis Streams consumer groups.

Where an entry goes: XREADGROUP (or XAUTOCLAIM, for entries a dead consumer left pending) ->
:class:`StreamConsumer` -> the handler's worker inbox (the same bounded inbox, loop and failure path
as pub/sub handlers) -> the handler -> its :class:`StreamSettlement` -> XACK. An entry is acknowledged only after its
handler succeeded, so a process killed mid-work loses nothing: its pending entries are claimed by
another consumer of the group once they have been idle for ``claim_idle`` seconds. Delivery is
therefore at-least-once; handlers that must not double-count make their effect idempotent.

A failing entry stays pending and is redelivered (after ``claim_idle``) until it has been delivered
``max_deliveries`` times; then it is acknowledged and moved to the dead-letter stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
from typing import Any

import orjson

from eventbus._backoff import Backoff
from eventbus._logs import LineLimit
from eventbus._message import Message
from eventbus._names import decode_name
from eventbus._parts import DEAD_LETTERED, HANDLED, REDELIVERED, Settlement
from eventbus._stream_options import StreamOptions
from eventbus._tasks import cancel_and_wait
from eventbus._worker import HandlerWorker

log = logging.getLogger("eventbus.streams")

DATA_FIELD = b"data"
# Fields the tracing of appends adds (W3C trace context): kept in ``fields``, left out of the JSON
# view of an entry written as a dict, so a handler sees the same payload with tracing on or off.
TRACE_FIELDS = frozenset({b"traceparent", b"tracestate"})


def default_consumer_name() -> str:
    """Unique per process, and readable in XINFO CONSUMERS."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value: Any) -> str:
    return decode_name(value) if isinstance(value, bytes) else str(value)


class StreamMessage(Message):
    """One stream entry as a handler sees it.

    ``data`` is the entry's ``data`` field (what :meth:`Publisher.append` stores for a payload),
    or, for an entry written with other fields, those fields as a JSON object of strings, so
    ``.json()`` works for both. ``fields`` has the raw fields, ``id`` the entry id, and
    ``deliveries`` how many times the group has delivered it (1 the first time).
    """

    __slots__ = ("deliveries", "fields", "group", "id")

    def __init__(self, stream: str, entry_id: str, fields: dict[bytes, bytes], deliveries: int, group: str) -> None:
        data = fields.get(DATA_FIELD)
        if data is None:
            data = orjson.dumps({_text(k): _text(v) for k, v in fields.items() if k not in TRACE_FIELDS})
        super().__init__(stream, data)
        self.id = entry_id
        self.fields = fields
        self.deliveries = deliveries
        self.group = group

    @property
    def stream(self) -> str:
        return self.channel

    def __repr__(self) -> str:
        return f"<StreamMessage {self.channel!r} {self.id} delivery {self.deliveries} {len(self.data)} bytes>"


class StreamSettlement(Settlement):
    """The settlement part (eventbus._parts) of a handler that reads streams: acknowledges entries.

    An entry is acknowledged once it is handled or dead-lettered. A failure below ``max_deliveries``
    is left pending for redelivery (the in-process retries are spent; the group delivers it again
    after ``claim_idle``); at the limit, or on :class:`~eventbus.Reject` / an invalid payload, it is
    dead-lettered and acknowledged. Messages the handler receives from pub/sub are not its business.
    """

    def __init__(self, handler_name: str) -> None:
        self.consumers: dict[str, StreamConsumer] = {}  # by stream: each registers itself
        self.lines = LineLimit(log, f"handler {handler_name}")

    def refusal(self, msg: Message) -> str | None:
        if isinstance(msg, StreamMessage) and msg.deliveries > self.consumers[msg.channel].options.max_deliveries:
            # Delivered that often without an ack or a recorded failure: it likely kills the process.
            return f"delivered {msg.deliveries} times without being acknowledged"
        return None

    def redelivers(self, msg: Message) -> bool:
        return isinstance(msg, StreamMessage) and msg.deliveries < self.consumers[msg.channel].options.max_deliveries

    def dead_letter_fields(self, msg: Message) -> dict[str, Any] | None:
        if not isinstance(msg, StreamMessage):
            return None
        return {"stream": msg.channel, "group": msg.group, "entry_id": msg.id, "deliveries": msg.deliveries}

    def settle(self, msg: Message, outcome: int, detail: object) -> None:
        if not isinstance(msg, StreamMessage):
            return
        consumer = self.consumers[msg.channel]
        if outcome in (HANDLED, DEAD_LETTERED):
            consumer.ack(msg.id)
            return
        if outcome == REDELIVERED and self.lines.allow("left pending"):
            log.warning(
                "entry %s of stream %r (group %r) stays pending after delivery %d of %d; "
                "it is redelivered once idle for %.1fs",
                msg.id,
                msg.channel,
                msg.group,
                msg.deliveries,
                consumer.options.max_deliveries,
                consumer.options.claim_idle,
            )
        # REDELIVERED, or LOST (its dead letter could not be written): pending, tried again later.
        consumer.release(msg.id)

    def stop(self) -> None:
        self.lines.flush()


class StreamConsumer:
    """One consumer of one group on one stream, feeding one handler's worker.

    ``redis`` is the shared command client (acks, claims, group creation); ``reader`` is a client
    of its own, because XREADGROUP ... BLOCK holds its connection while it waits.
    """

    def __init__(
        self,
        stream: str,
        group: str,
        options: StreamOptions,
        worker: HandlerWorker,
        redis: Any,
        reader: Any,
    ) -> None:
        self.stream = stream
        self.group = group
        self.options = options
        self.name = options.consumer or default_consumer_name()
        self.worker = worker
        self.redis = redis
        self.reader = reader
        self.held: set[str] = set()  # ids in our inbox or being handled: never claim them twice
        self.delivered = 0
        self.claimed = 0
        self.reading = False  # readiness: the group exists and the last read (or ping) succeeded
        self._acks: list[str] = []
        self._ack_wanted = asyncio.Event()
        self._room = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._acker: asyncio.Task[None] | None = None
        settlement = worker.settlement
        if not isinstance(settlement, StreamSettlement):
            raise TypeError(f"handler {worker.name} reads streams but its worker does not acknowledge entries")
        settlement.consumers[stream] = self

    def __repr__(self) -> str:
        return f"<StreamConsumer {self.stream!r} group {self.group!r} as {self.name!r}>"

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.ensure_group()
        self.reading = True
        self._acker = asyncio.create_task(self._ack_loop(), name=f"eventbus:xack:{self.stream}")
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"eventbus:xreadgroup:{self.stream}"),
            asyncio.create_task(self._claim_loop(), name=f"eventbus:xautoclaim:{self.stream}"),
        ]

    async def ensure_group(self) -> None:
        """Create the group (and the stream) if absent; an existing group is left as it is."""
        try:
            await self.redis.xgroup_create(self.stream, self.group, id=self.options.start, mkstream=True)
            log.info("created consumer group %r on stream %r from %s", self.group, self.stream, self.options.start)
        except Exception as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def stop_reading(self) -> None:
        """Stop taking new entries; what is already in the inbox is still handled and acknowledged."""
        # A reader blocked in XREADGROUP that was reconnecting can swallow one cancellation.
        left = await cancel_and_wait(self._tasks)
        if left:
            log.warning("%r: %d reading task(s) did not stop; abandoning them", self, len(left))
        self._tasks.clear()
        self.reading = False

    def problems(self) -> list[str]:
        if self.reading:
            return []
        return [f"stream {self.stream!r} group {self.group!r} not reading (retrying)"]

    async def close(self) -> None:
        """After the worker drained: flush the acks, then leave the group if nothing is pending."""
        if self._acker is not None:
            self._acker.cancel()
            await asyncio.gather(self._acker, return_exceptions=True)
            self._acker = None
        with contextlib.suppress(Exception):
            await self._flush_acks()
        with contextlib.suppress(Exception):
            pending = await self.redis.xpending_range(self.stream, self.group, "-", "+", 1, consumername=self.name)
            if pending:
                log.warning(
                    "%r leaves entries pending (read but not acknowledged); the group's other consumers "
                    "claim them after %.1fs idle",
                    self,
                    self.options.claim_idle,
                )
            else:
                # A consumer with nothing pending is only clutter in XINFO CONSUMERS.
                await self.redis.xgroup_delconsumer(self.stream, self.group, self.name)
        with contextlib.suppress(Exception):
            await self.reader.aclose()

    # -- acknowledging ------------------------------------------------------------------------

    def ack(self, entry_id: str) -> None:
        """Queue an XACK; acks are sent in batches, one round trip for all that accumulated."""
        self._acks.append(entry_id)
        self._ack_wanted.set()
        self.release(entry_id)

    def release(self, entry_id: str) -> None:
        """The entry left our hands (acked, or left pending for redelivery)."""
        self.held.discard(entry_id)
        if len(self.worker.inbox) < self.options.read_count:
            self._room.set()

    async def _ack_loop(self) -> None:
        backoff = Backoff()
        while True:
            await self._ack_wanted.wait()
            self._ack_wanted.clear()
            try:
                await self._flush_acks()
                backoff.reset()
            except Exception as exc:  # noqa: BLE001 - keep the ids and retry: an unacked entry is redelivered
                log.warning("XACK on %r failed, retrying: %s: %s", self.stream, type(exc).__name__, exc)
                await backoff.sleep()
                self._ack_wanted.set()

    async def _flush_acks(self) -> None:
        while self._acks:
            batch = self._acks[:1000]
            await self.redis.xack(self.stream, self.group, *batch)
            del self._acks[: len(batch)]

    # -- reading ------------------------------------------------------------------------------

    async def _wait_for_room(self) -> None:
        # Backpressure: read more only when the inbox has room for a batch, so nothing is dropped
        # and a crash abandons at most a couple of batches (which are then claimed by others).
        while len(self.worker.inbox) >= self.options.read_count:
            self._room.clear()
            await self._room.wait()

    def _deliver(self, entry_id: Any, fields: dict[bytes, bytes], deliveries: int) -> None:
        key = _text(entry_id)
        self.held.add(key)
        self.delivered += 1
        # Past the budget if need be: the read loop's backpressure already bounds stream entries,
        # and dropping one would strand it, pending in our name, until this process exits.
        self.worker.enqueue(StreamMessage(self.stream, key, fields, deliveries, self.group))

    async def _read_loop(self) -> None:
        # First our own pending entries (a restart under the same consumer name), then new ones.
        cursor = "0"
        backoff = Backoff()
        block_ms = int(self.options.block * 1000)
        while True:
            await self._wait_for_room()
            started = time.monotonic()
            try:
                if not self.reading:
                    # After a failure: a quick PING says the server is back, where a successful
                    # XREADGROUP would only return after blocking for up to `block` seconds.
                    await self.reader.ping()
                    self.reading = True
                reply = await self.reader.xreadgroup(
                    self.group, self.name, {self.stream: cursor}, count=self.options.read_count, block=block_ms
                )
                backoff.reset()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the loop must outlive a lost connection
                self.reading = False
                if "NOGROUP" in str(exc):
                    log.warning(
                        "group %r on stream %r vanished (stream deleted?); recreating it", self.group, self.stream
                    )
                    with contextlib.suppress(Exception):
                        await self.ensure_group()
                else:
                    log.warning("XREADGROUP on %r failed, retrying: %s: %s", self.stream, type(exc).__name__, exc)
                await backoff.sleep()
                continue
            entries = reply[0][1] if reply else []
            if cursor != ">":
                await self._deliver_history(entries)
                cursor = _text(entries[-1][0]) if entries else ">"
                continue
            for entry_id, fields in entries:
                self._deliver(entry_id, fields, 1)
            if not entries and time.monotonic() - started < self.options.block / 2:
                # A server that answers at once instead of blocking (fakeredis): do not spin.
                await asyncio.sleep(0.01)

    async def _deliver_history(self, entries: list[Any]) -> None:
        live = [(_text(i), f) for i, f in entries if f]
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream (XDEL/MAXLEN) while pending: nothing to handle
                self.ack(_text(entry_id))
        counts = await self._delivery_counts([i for i, _ in live])
        for entry_id, fields in live:
            if entry_id not in self.held:
                self._deliver(entry_id, fields, counts.get(entry_id, 1))

    async def _delivery_counts(self, ids: list[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = await self.redis.xpending_range(
            self.stream, self.group, ids[0], ids[-1], len(ids) + len(self.held), consumername=self.name
        )
        return {_text(row["message_id"]): int(row["times_delivered"]) for row in rows}

    # -- reclaiming ---------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        period = min(max(self.options.claim_idle / 2, 0.05), 30.0)
        idle_ms = int(self.options.claim_idle * 1000)
        while True:
            # Jitter keeps the consumers of a group from claiming in lockstep.
            await asyncio.sleep(period * random.uniform(0.75, 1.25))
            try:
                await self._claim_all(idle_ms)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - try again next period
                log.warning("XAUTOCLAIM on %r failed: %s: %s", self.stream, type(exc).__name__, exc)

    async def _claim_all(self, idle_ms: int) -> None:
        cursor = "0-0"
        while True:
            await self._wait_for_room()
            reply = await self.redis.xautoclaim(
                self.stream, self.group, self.name, idle_ms, start_id=cursor, count=self.options.read_count
            )
            cursor = _text(reply[0])
            entries = [(_text(i), f) for i, f in reply[1] if _text(i) not in self.held]
            if entries:
                self.claimed += len(entries)
                log.info("claimed %d idle entries of %r in group %r", len(entries), self.stream, self.group)
                await self._deliver_history(entries)
            if cursor == "0-0":
                return
