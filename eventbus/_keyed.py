"""Ordered per key, parallel across keys: the worker strategy of ``@on(..., key=...)``.

    @on("orders", concurrency=8, key="customer")
    async def store(order: Order, ctx: Context) -> None: ...

Messages with equal keys are handled one at a time, in the order they were delivered; messages
with different keys run in parallel, up to ``concurrency`` at once. Retries happen while the key
is held, so a retried message still goes before the later messages of its key.

How: each of the handler's ``concurrency`` tasks takes the next message from the shared inbox and
asks :meth:`KeyedOrdering.admit` for it. A key that no task holds is taken, and the task handles
the message, then (:meth:`KeyedOrdering.after`) every message that arrived for that key meanwhile,
then lets the key go. A message whose key another task holds is appended to that key's queue
instead, and the task goes on to the next message. So a task never waits for a key, a busy key
never blocks the others, and the order of a key is the order of the inbox.

It is an ordering part of the one worker loop (eventbus._parts), so keyed handlers share the
plain handlers' compiled loop and failure path; handlers without a key have no ordering part and
pay one comparison per message for the possibility. Messages waiting behind their key still count
against the inbox's memory budget until their turn comes.
"""

from __future__ import annotations

import operator
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

from eventbus._errors import ConfigError, PayloadError
from eventbus._message import Message
from eventbus._parts import Ordering
from eventbus._router import Handler


def key_function(handler: Handler) -> Callable[[Message], Hashable]:
    """``key_of(msg)`` for a handler: its ``key`` option applied to what the handler receives."""
    key = handler.options.key
    if key is None:
        raise ConfigError(f"handler {handler.name} has no key")
    plan = handler.payload
    if isinstance(key, str):
        mapping = plan is not None and (
            plan.decoder.annotation is dict or _is_typed_dict(plan.decoder.annotation) or plan.decoder.codec == "json"
        )
        pick: Callable[[Any], Hashable] = operator.itemgetter(key) if mapping else operator.attrgetter(key)
    else:
        pick = key
    if plan is None:
        return pick
    # Cached: the invoke decodes the same message again right after (eventbus._payloads).
    decode = plan.decoder.cached
    return lambda msg: pick(decode(msg))


def _is_typed_dict(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, dict) and hasattr(annotation, "__total__")


class KeyedOrdering(Ordering):
    """The per-key queues of one handler, shared by its worker tasks."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.key_of = key_function(handler)
        # A key is in this dict while a task handles its messages; the deque holds the ones waiting.
        self.held: dict[Hashable, deque[Message]] = {}
        # The key of the message each task is handling, by message: after() finds its queue.
        self.keys: dict[int, Hashable] = {}

    def admit(self, msg: Message) -> Message | None:
        try:
            key = self.key_of(msg)
            hash(key)
        except PayloadError:
            raise  # undecodable: refused, as for any typed handler
        except Exception as exc:
            error = PayloadError(f"cannot compute the key of a message on {msg.channel!r}: {type(exc).__name__}")
            raise error from exc
        queue = self.held.get(key)
        if queue is not None:
            # Another task holds the key: it handles this one after the ones before it.
            queue.append(msg)
            self.waiting += 1
            return None
        self.held[key] = deque()
        self.keys[id(msg)] = key
        return msg

    def after(self, msg: Message) -> Message | None:
        key = self.keys.pop(id(msg), None)
        if key is None:
            return None  # refused before it had a key
        queue = self.held[key]
        if not queue:
            del self.held[key]
            return None
        following = queue.popleft()
        self.waiting -= 1
        self.keys[id(following)] = key
        return following

    def abandon(self) -> int:
        waiting = self.waiting
        for queue in self.held.values():
            queue.clear()
        self.waiting = 0
        return waiting
