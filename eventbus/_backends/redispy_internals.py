"""Everything eventbus relies on in redis-py beyond its public API, in one place.

The auto-pipelining client (:mod:`eventbus._backends.autopipeline`) takes over sockets that
redis-py opened and answers commands itself, so it depends on parts of redis-py that may change in
any release: private attributes of a connection, the constructor and the state of ``Pipeline``,
and what ``Redis.parse_response`` does with a reply. The sentinel backend depends on how a
``SentinelConnectionPool`` re-resolves its master. Each such dependency is a named function here,
and ``tests/backends/test_redispy_internals.py`` checks every one against the installed redis-py:
when one changes, that test names the redis-py version and the internal.

Until eventbus follows such a change, auto-pipelining can be turned off (``--no-autopipeline``,
``autopipeline=False``, ``EVENTBUS_AUTOPIPELINE=0``): ``ctx.redis`` is then a plain
``redis.asyncio.Redis`` and nothing in this module is used except the sentinel helpers, which
the sentinel backend uses in any case.

Cost: the pipeline functions (:func:`init_lane_pipeline`, :func:`queue_pipeline_command`,
:func:`execute_pipeline_on_lane`) are bound as the methods of the lane's pipeline class rather
than called from them, and the usual case of :func:`parse_reply` (a reply that is not an error,
with no option but the cache keys: look its callback up, apply it) is repeated inline in the
client's two per-command paths, where a call of this function would add a frame to every command.
The contract test runs those paths against redis-py too.

Not followed: redis-py 8's fallback to RESP2 on a server that refuses ``HELLO`` (it then adapts
its callbacks per connection, through the private ``_resp2_fallback``); the lanes apply the
client's callbacks as they are, which holds for every server that knows ``HELLO`` (Redis 6 on).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import hiredis
import redis.asyncio as aioredis
import redis.client
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

if TYPE_CHECKING:
    from redis.asyncio.connection import AbstractConnection
    from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

# The options redis-py's command methods pass to ``execute_command`` for ``parse_response``
# (redis.client): read the reply undecoded; what to return instead of an error reply; the keys, for
# client-side caching. None of them reaches a response callback.
NEVER_DECODE = "NEVER_DECODE"
EMPTY_RESPONSE = "EMPTY_RESPONSE"
CACHE_KEYS = "keys"
# What hiredis's Reader returns while a reply is incomplete (the lanes pass it as notEnoughData).
NOT_ENOUGH_DATA: Any = object()
# Arguments of these types hiredis.pack_command encodes exactly as redis-py's Encoder does.
FAST_TYPES = frozenset({bytes, str, int})

_dict_get = dict.get
# redis-py's table of response callbacks, a dict that stores its keys upper-cased. Looked up, not
# imported: the sentinel backend imports this module too, and must not fail if the name goes away.
CALLBACK_TABLE: Any = getattr(redis.client, "CaseInsensitiveDict", None)


# -- a connection's socket, taken over by a lane ---------------------------------------------------


def new_connection(pool: aioredis.ConnectionPool) -> AbstractConnection:
    """A connection built as ``pool`` builds its own (class, URL options, retry policy), which the
    pool does not count: a lane owns it for as long as it lives."""
    return pool.connection_class(**pool.connection_kwargs)


@dataclass(frozen=True, slots=True)
class TakenSocket:
    """What a lane uses of a connected redis-py connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    # A hiredis Reader that parses replies as the connection's own parser would: error replies
    # become redis-py's exception classes (as values), text is decoded as the client asked.
    parser: Any
    # How long a reply may take (the URL's ``socket_timeout``), or None.
    reply_timeout: float | None


def take_socket(conn: AbstractConnection) -> TakenSocket:
    """The streams of ``conn`` after ``await conn.connect()`` (handshake done: AUTH, SELECT, TLS,
    CLIENT SETINFO), and a parser for what arrives on them."""
    reader, writer = conn._reader, conn._writer
    if reader is None or writer is None:
        raise RedisConnectionError("the connection is not connected")
    options: dict[str, Any] = {
        "protocolError": InvalidResponse,
        "replyError": conn._parser.parse_error,
        "notEnoughData": NOT_ENOUGH_DATA,
    }
    encoder = conn.encoder
    if encoder.decode_responses:
        options["encoding"] = encoder.encoding
        options["errors"] = encoder.encoding_errors
    return TakenSocket(reader, writer, hiredis.Reader(**options), conn.socket_timeout)


def forget_socket(conn: AbstractConnection) -> None:
    """Make ``conn`` drop its streams without waiting (the lane has already aborted the transport)."""
    conn._close()  # type: ignore[no-untyped-call, unused-ignore]  # typed in some redis-py versions


# -- the client ---------------------------------------------------------------------------------


def wants_own_connection(client: aioredis.Redis) -> bool:
    """Whether ``client`` must keep one connection per caller: ``single_connection_client``, or
    RESP3 asked for explicitly (push messages would interleave with replies on a shared one)."""
    protocol = client.connection_pool.connection_kwargs.get("protocol")
    return bool(client.single_connection_client) or protocol in (3, "3")


def own_pool(client: aioredis.Redis) -> None:
    """Make ``client.aclose()`` close its pool too, as ``Redis.from_pool`` does (which takes no
    subclass arguments)."""
    client.auto_close_connection_pool = True


@dataclass(frozen=True, slots=True)
class Encoding:
    """How the client encodes arguments: its ``Encoder``'s settings and ``encode``."""

    encoding: str
    errors: str
    encode: Callable[[Any], Any]


def client_encoding(client: aioredis.Redis) -> Encoding:
    encoder = client.connection_pool.get_encoder()  # type: ignore[no-untyped-call, unused-ignore]
    return Encoding(encoder.encoding, encoder.encoding_errors, encoder.encode)


def command_packer(encoding: Encoding) -> Callable[[bytes, int, tuple[Any, ...]], bytes]:
    """``pack(head, ntokens, args)``: RESP for ``args`` (whose command name, ``ntokens`` tokens, is
    already packed as ``head``), each argument encoded exactly as redis-py's ``Encoder.encode``
    would, its ``DataError`` included. For what hiredis.pack_command cannot take (floats, other
    encodings, memoryviews)."""
    charset, errors, encode = encoding.encoding, encoding.errors, encoding.encode

    def pack(head: bytes, ntokens: int, args: tuple[Any, ...]) -> bytes:
        parts = [b"*%d\r\n" % (len(args) - 1 + ntokens), head]
        append = parts.append
        for arg in args[1:]:
            kind = type(arg)
            if kind is bytes:
                data = arg
            elif kind is str:
                data = arg.encode(charset, errors)
            elif kind is int:
                data = b"%d" % arg
            elif kind is float:
                data = repr(arg).encode()  # what the Encoder does with a float
            else:
                data = encode(arg)
                if not isinstance(data, bytes):
                    data = bytes(data)
            append(b"$%d\r\n%s\r\n" % (len(data), data))
        return b"".join(parts)

    return pack


def parse_reply(callbacks: Any, name: Any, plain_name: bool, reply: Any, options: dict[str, Any]) -> Any:
    """What ``Redis.parse_response`` does with a reply it has read, for a command issued as
    ``execute_command(name, ..., **options)``: an error reply is raised (or ``EMPTY_RESPONSE``
    returned instead of a ``ResponseError``), the other options are removed and the response
    callback applied. May return an awaitable (a callback may be a coroutine function): the
    caller awaits it. ``options`` is consumed.

    ``plain_name``: ``name`` is a str or bytes that is its own upper case; then the callback is
    found with one C-level lookup when ``callbacks`` is redis-py's CaseInsensitiveDict (whose keys
    are stored upper-cased) instead of its ``get``, a Python frame per command.
    """
    if isinstance(reply, Exception):
        if EMPTY_RESPONSE in options and isinstance(reply, ResponseError):
            return options[EMPTY_RESPONSE]
        raise reply
    callback = _dict_get(callbacks, name) if plain_name and type(callbacks) is CALLBACK_TABLE else callbacks.get(name)
    if callback is None:
        return reply
    if not options:
        return callback(reply)
    options.pop(NEVER_DECODE, None)
    options.pop(EMPTY_RESPONSE, None)
    options.pop(CACHE_KEYS, None)
    return callback(reply, **options)


# -- pipeline(transaction=False) on a lane ---------------------------------------------------------


def init_lane_pipeline(pipe: aioredis.client.Pipeline, client: Any) -> None:
    """Initialise ``pipe`` (a ``Pipeline`` subclass, bound as its ``__init__``) as
    ``client.pipeline(transaction=False)`` would. ``client.run_on_lane(stack)`` runs the queued
    commands for :func:`execute_pipeline_on_lane`: their replies (errors as values), or None when one
    of them needs a connection of its own (then redis-py's own ``execute`` runs the pipeline)."""
    aioredis.client.Pipeline.__init__(
        pipe,
        connection_pool=client.connection_pool,
        response_callbacks=client.response_callbacks,
        transaction=False,
        shard_hint=None,
    )
    pipe.run_on_lane = client.run_on_lane  # type: ignore[attr-defined]


def queue_pipeline_command(pipe: Any, *args: Any, **kwargs: Any) -> Any:
    """``Pipeline.execute_command`` in one frame instead of two (bound as the method: it runs once
    per queued command): the same test, then the stack append of ``pipeline_execute_command``."""
    if (pipe.watching or args[0] == "WATCH") and not pipe.explicit_transaction:
        return pipe.immediate_execute_command(*args, **kwargs)
    pipe.command_stack.append((args, kwargs))
    return pipe


async def execute_pipeline_on_lane(pipe: Any, raise_on_error: bool = True) -> list[Any]:
    """``Pipeline.execute`` for a pipeline made by :func:`init_lane_pipeline` (bound as the method):
    its commands go to ``pipe.run_on_lane`` unless the pipeline watches keys, is in ``multi()``,
    has scripts to load or holds a connection, or a command needs a connection of its own (then
    redis-py's ``execute`` runs it). Afterwards the pipeline is reset as ``reset()`` would, without
    a coroutine when it holds no connection and watches nothing."""
    stack = pipe.command_stack
    if pipe.watching or pipe.explicit_transaction or pipe.scripts or pipe.connection is not None:
        return await aioredis.client.Pipeline.execute(pipe, raise_on_error)
    if not stack:
        return []
    try:
        replies = await pipe.run_on_lane(stack)
        if replies is None:
            return await aioredis.client.Pipeline.execute(pipe, raise_on_error)
    finally:
        if pipe.connection is None and not pipe.watching:
            pipe.command_stack = []
            pipe.scripts = set()
            pipe.explicit_transaction = False
        else:
            await pipe.reset()
    if raise_on_error:
        pipe.raise_first_error(stack, replies)
    return replies  # type: ignore[no-any-return]


# -- sentinel ---------------------------------------------------------------------------------


async def reresolve_master(client: aioredis.Redis) -> None:
    """Ask the sentinels again for the master of ``client`` (from ``Sentinel.master_for``); if it
    moved, its pool drops the idle connections to the old one."""
    pool = cast("SentinelConnectionPool", client.connection_pool)
    await pool.get_master_address()  # type: ignore[no-untyped-call, unused-ignore]


async def close_sentinel(sentinel: Sentinel) -> None:
    """Close the clients ``sentinel`` uses to ask its sentinels (``Sentinel.aclose`` from redis-py 8.1)."""
    aclose = getattr(sentinel, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    clients: Iterable[aioredis.Redis] = sentinel.sentinels
    results = await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)
    error = next((r for r in results if isinstance(r, BaseException)), None)
    if error is not None:
        raise error


__all__ = [
    "CACHE_KEYS",
    "CALLBACK_TABLE",
    "EMPTY_RESPONSE",
    "FAST_TYPES",
    "NEVER_DECODE",
    "NOT_ENOUGH_DATA",
    "Encoding",
    "TakenSocket",
    "client_encoding",
    "close_sentinel",
    "command_packer",
    "execute_pipeline_on_lane",
    "forget_socket",
    "init_lane_pipeline",
    "new_connection",
    "own_pool",
    "parse_reply",
    "queue_pipeline_command",
    "reresolve_master",
    "take_socket",
    "wants_own_connection",
]
