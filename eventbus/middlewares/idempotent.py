"""``idempotent(key=..., ttl=...)``: handle each message key once, as far as Redis remembers it.

The natural companion of at-least-once delivery (``@on_stream``: an entry is redelivered when a
consumer dies before its XACK; a producer may also publish the same event twice).

How it works, per handler and key (the Redis key is ``{prefix}{handler}:{key}``):

1. ``SET key <token> NX EX lock_ttl`` claims the key *before* the handler runs. If the key holds
   ``done``, the message was handled already: it is skipped (the handler is not called, the
   attempt counts as handled, ``ctx.log`` says so at debug level). If another attempt holds the
   claim right now (a concurrent duplicate), this attempt fails with :class:`DuplicateInProgress`
   and is retried / left pending by policy, so the duplicate is neither run twice nor lost.
2. The handler succeeds: ``SET key done EX ttl``: later copies are skipped for ``ttl`` seconds.
3. The handler fails (or is cancelled): the claim is deleted, so a retry or a redelivery runs the
   handler again. A failed message is never marked as handled.

A process killed mid-handler leaves its claim until ``lock_ttl`` expires; a redelivery before
that fails with :class:`DuplicateInProgress` and is tried again later. Pick ``lock_ttl`` above the
handler's longest run (with :func:`~eventbus.middlewares.timeout.timeout` inside this middleware,
that is the timeout) and, on streams, at most the group's ``claim_idle`` (60 s by default, as is
``lock_ttl``), so an entry reclaimed from a dead consumer finds the claim expired. What is skipped
is what Redis still remembers: after ``ttl`` a copy runs again.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from eventbus._context import Context
from eventbus._errors import ConfigError, EventbusError
from eventbus._message import Message
from eventbus.middleware import Invoke, Middleware

DONE = b"done"
DEFAULT_PREFIX = "eventbus:idempotent:"


class DuplicateInProgress(EventbusError):
    """Another attempt holds the claim on this message's key: try again later."""


def stream_entry_key(msg: Message) -> str:
    """The default key: a stream entry's stream and id (what a redelivery repeats)."""
    entry_id = getattr(msg, "id", None)
    if entry_id is None:
        raise ConfigError(
            f"idempotent(): a message on {msg.channel!r} is not a stream entry; give key=lambda msg: ... "
            "(e.g. an id from the payload) for pub/sub handlers"
        )
    return f"{msg.channel}:{entry_id}"


def idempotent(
    key: Callable[[Message], Any] = stream_entry_key,
    *,
    ttl: float = 24 * 3600,
    lock_ttl: float = 60.0,
    prefix: str = DEFAULT_PREFIX,
) -> Middleware:
    """Middleware skipping messages whose ``key(msg)`` this handler already handled within ``ttl`` s.

    ``key`` returns a str/bytes/int identifying the event, or None to handle the message without
    deduplication; it defaults to the stream entry id (stream handlers only).
    """
    if not callable(key):
        raise ConfigError(f"idempotent(key=...) needs a function msg -> key, got {key!r}")
    for name, value in (("ttl", ttl), ("lock_ttl", lock_ttl)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 1:
            raise ConfigError(f"idempotent({name}=...) needs a number of seconds >= 1, got {value!r}")
    ttl_s, lock_s = int(ttl), int(lock_ttl)

    async def idempotent_middleware(msg: Message, ctx: Context, call_next: Invoke) -> Any:
        ident = key(msg)
        if ident is None:
            return await call_next(msg, ctx)
        if isinstance(ident, bytes):
            ident = ident.decode("utf-8", "surrogateescape")
        redis_key = f"{prefix}{ctx.handler}:{ident}"
        token = b"claim:" + os.urandom(8).hex().encode()
        if not await ctx.redis.set(redis_key, token, nx=True, ex=lock_s):
            held = await ctx.redis.get(redis_key)
            if held == DONE:
                ctx.log.debug("skipping a message on %r: key %s was handled already", msg.channel, ident)
                return None
            if held is not None:
                raise DuplicateInProgress(f"key {ident} is being handled by another attempt; trying again later")
            # The claim expired between the two commands: take it now, or give up this attempt.
            if not await ctx.redis.set(redis_key, token, nx=True, ex=lock_s):
                raise DuplicateInProgress(f"key {ident} is being handled by another attempt; trying again later")
        try:
            result = await call_next(msg, ctx)
        except BaseException:
            # Not handled: let a retry or a redelivery run it. Only our own claim is removed (it
            # may have expired and been taken by another attempt since).
            if await ctx.redis.get(redis_key) == token:
                await ctx.redis.delete(redis_key)
            raise
        await ctx.redis.set(redis_key, DONE, ex=ttl_s)
        return result

    idempotent_middleware.__qualname__ = f"idempotent({getattr(key, '__name__', 'key')})"
    return idempotent_middleware
