"""Auto-pipelining for the shared command client: commands issued in one loop turn share a round trip.

redis.asyncio spends most of a command's time in Python (a pooled connection checked out, a
write, a read coroutine chain): ~12k commands/s sequential, ~18k/s with 50 in flight on this
project's machine. ioredis-style auto-pipelining removes that cost without changing handler code:

- :class:`AutoPipelineRedis` is a ``redis.asyncio.Redis``; every command method still goes through
  ``execute_command`` and redis-py's response callbacks, so ``hgetall`` still returns a dict.
- A plain command is packed at once and queued on a :class:`_Lane` (one multiplexed connection).
  Everything queued in one loop turn is written by one ``call_soon`` flush, in a single
  ``write`` (a lone command waits one loop iteration; a busy lane saves a syscall per command). One reader task
  feeds each socket read to hiredis and resolves the callers' futures in FIFO order.
- Anything that needs a connection to itself — blocking commands, MULTI/WATCH, SELECT, pub/sub,
  ``pipeline()``, ``pubsub()`` — goes to the ordinary ``BlockingConnectionPool`` underneath.

Read coalescing: identical read-only commands on one key (``HGETALL order:7`` issued by five
handlers) that are queued in the same batch share one command on the wire, one reply and one
parse; every caller still gets its own copy of the reply and runs its own response callback. The
rule keeps every ordering a caller can observe: a read joins an identical read queued earlier in
the *same unwritten batch* only if no command that may write its key was queued in between (a
write to the key, or any command whose keys are not known here: ``DEL``, ``EVAL``, ``MSET`` ...,
ends sharing for every key). The shared reply is executed after every one of those callers issued
its read, so each gets a value its own command could have returned (linearizable), and a caller's
own earlier writes on the lane are always visible to its reads. See :data:`COALESCED_READS`.

Failure semantics: commands already written when the connection drops fail with
``redis.ConnectionError`` (they may or may not have run, so they are never replayed); a reply
that does not arrive within ``socket_timeout`` fails them with ``redis.TimeoutError`` (the lane
is shared, so one command slower than that on the server fails the commands queued behind it).
Commands not yet written wait for the next connection. Reconnection is lazy (the next command),
with the pool's retry and backoff policy for the connect (command_client's rides out ~10 s).
Memory is bounded: at most ``max_in_flight`` commands per lane, later callers wait in FIFO order.

What this needs of redis-py beyond its public API (a connection's socket and parser, ``Pipeline``'s
state, what ``parse_response`` does with a reply) is in :mod:`eventbus._backends.redispy_internals`,
checked against the installed redis-py by its contract test. ``autopipeline=False`` gives a plain
``redis.asyncio.Redis`` instead (see :func:`eventbus._backends.subscriber.command_client`).
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import functools
import inspect
import itertools
import select
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from eventbus._backends.redispy_internals import (
    CACHE_KEYS,
    CALLBACK_TABLE,
    EMPTY_RESPONSE,
    FAST_TYPES,
    NEVER_DECODE,
    NOT_ENOUGH_DATA,
    client_encoding,
    command_packer,
    execute_pipeline_on_lane,
    forget_socket,
    init_lane_pipeline,
    new_connection,
    own_pool,
    parse_reply,
    queue_pipeline_command,
    take_socket,
    wants_own_connection,
)
from eventbus._settings import DEFAULT_MAX_CONNECTIONS

# Commands that block the connection or change its state: they need a connection of their own.
DEDICATED_COMMANDS = frozenset(
    {
        # blocking
        "BLPOP", "BRPOP", "BRPOPLPUSH", "BLMOVE", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
        "WAIT", "WAITAOF", "MONITOR",
        # connection state and transactions
        "MULTI", "EXEC", "DISCARD", "WATCH", "UNWATCH", "SELECT", "AUTH", "HELLO", "RESET", "QUIT",
        "CLIENT", "READONLY", "READWRITE", "SWAPDB",
        # pub/sub (the subscription connection is elsewhere; PUBLISH is a plain command)
        "SUBSCRIBE", "UNSUBSCRIBE", "PSUBSCRIBE", "PUNSUBSCRIBE", "SSUBSCRIBE", "SUNSUBSCRIBE",
        # HIMPORT keeps per-connection fieldsets (redis-py 8.1)
        "HIMPORT",
    }
)  # fmt: skip
# Blocking only with a BLOCK argument.
MAYBE_BLOCKING = frozenset({"XREAD", "XREADGROUP"})

# Read-only commands whose reply depends only on the one key at args[1] and on the other arguments,
# deterministically: identical ones in one batch may share a reply. Random (SRANDMEMBER,
# HRANDFIELD), multi-key (MGET, EXISTS, SINTER) and side-effecting reads (GETEX) are left out.
COALESCED_READS = frozenset(
    {
        "GET", "GETRANGE", "STRLEN", "GETBIT", "BITCOUNT", "BITPOS", "BITFIELD_RO",
        "HGET", "HGETALL", "HMGET", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSTRLEN",
        "LRANGE", "LLEN", "LINDEX", "LPOS",
        "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD",
        "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX", "ZREVRANGEBYLEX",
        "ZSCORE", "ZMSCORE", "ZCARD", "ZCOUNT", "ZLEXCOUNT", "ZRANK", "ZREVRANK",
        "XRANGE", "XREVRANGE", "XLEN", "TYPE",
    }
)  # fmt: skip
# Commands that change at most the one key at args[1]: they end sharing for that key only.
SINGLE_KEY_WRITES = frozenset(
    {
        "SET", "SETNX", "SETEX", "PSETEX", "GETSET", "GETDEL", "GETEX", "APPEND", "SETRANGE", "SETBIT",
        "INCR", "INCRBY", "INCRBYFLOAT", "DECR", "DECRBY", "BITFIELD",
        "HSET", "HSETNX", "HMSET", "HDEL", "HINCRBY", "HINCRBYFLOAT",
        "SADD", "SREM", "SPOP",
        "LPUSH", "RPUSH", "LPUSHX", "RPUSHX", "LPOP", "RPOP", "LSET", "LREM", "LTRIM", "LINSERT",
        "ZADD", "ZREM", "ZINCRBY", "ZPOPMIN", "ZPOPMAX", "ZREMRANGEBYSCORE", "ZREMRANGEBYRANK",
        "ZREMRANGEBYLEX",
        "XADD", "XDEL", "XTRIM", "XACK", "XCLAIM", "XAUTOCLAIM",
        "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "PERSIST", "PFADD",
    }
)  # fmt: skip
# Commands that write no key at all: they leave sharing alone. Everything not named in one of these
# three sets (DEL, MSET, EVAL, FCALL, RENAME, FLUSHDB, SMOVE, ...) ends sharing for every key.
KEYLESS_OR_READ_ONLY = frozenset(
    {
        "PUBLISH", "SPUBLISH", "PING", "ECHO", "TIME", "DBSIZE", "MGET", "EXISTS", "TTL", "PTTL",
        "EXPIRETIME", "PEXPIRETIME", "SRANDMEMBER", "HRANDFIELD", "ZRANDMEMBER", "SINTER", "SUNION",
        "SDIFF", "SINTERCARD", "ZINTER", "ZUNION", "ZDIFF", "XREAD", "XPENDING", "XINFO", "PFCOUNT",
        "PUBSUB", "INFO", "LCS",
    }
)  # fmt: skip
# What a command does to the lane's sharing table: share (a coalescable read), write its key,
# nothing, or end all sharing.
_SHARE, _WRITE_KEY, _NEUTRAL, _BARRIER = 0, 1, 2, 3

# A command name's packed tokens ("CONFIG GET" is two), their count, whether it may share a
# lane (True yes, False never, None depending on its arguments: XREAD ... BLOCK), what it does
# to read sharing (_SHARE ... _BARRIER), whether hiredis may pack it (one token and a UTF-8
# client), and whether the name is its own upper case (then a plain dict lookup finds its
# response callback exactly as CaseInsensitiveDict.get would, without a Python frame).
_Route = tuple[bytes, int, bool | None, int, bool, bool]
# All arguments of these types: hiredis's packer encodes them exactly as redis-py would. (A C-level
# check over ``map(type, args)``: no Python loop per argument.)
_all_fast_types = FAST_TYPES.issuperset
_pack_command = hiredis.pack_command
# Replies a response callback commonly returns; anything else is checked with inspect.isawaitable.
_NOT_AWAITABLE = frozenset({bytes, str, int, float, bool, type(None), list, dict, set, tuple})
_dict_get = dict.get
_READ_SIZE = 65536


class _Lane:
    """One multiplexed connection: FIFO of callers' futures, one write per loop turn, one reader."""

    def __init__(self, client: AutoPipelineRedis, max_in_flight: int) -> None:
        self.client = client
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # commands written or queued, plus slots reserved for woken waiters
        self.connected = False
        self.generation = 0  # bumped per connection, so a reservation never outlives its connection
        self._conn: AbstractConnection | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._stream: asyncio.StreamReader | None = None
        self._poller: select.poll | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._connecting: asyncio.Task[None] | None = None
        self._pending: deque[tuple[asyncio.Future[Any], bool]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._waiters: deque[asyncio.Future[int]] = deque()
        self._timeout: float | None = None
        self._deadline: asyncio.Timeout | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # loop.create_future without its Python frame when the loop does not override it.
        self._new_future: Callable[[], asyncio.Future[Any]] | None = None
        self._closed = False
        self._background: set[asyncio.Task[None]] = set()
        # Read sharing within the unwritten batch: key -> {(packed, raw): the first caller's
        # future}; and each such future's followers (the callers sharing its reply).
        self._shareable: dict[str, dict[tuple[bytes, bool], asyncio.Future[Any]]] = {}
        self._followers: dict[asyncio.Future[Any], list[asyncio.Future[Any]]] = {}
        self.coalesced = 0  # reads answered by another caller's identical read

    # -- sending ------------------------------------------------------------------------------

    def try_send(self, packed: bytes, raw: bool, access: int, key: str | None) -> asyncio.Future[Any] | None:
        """Queue a command if the lane is up and has room; None means take :meth:`send`.

        ``access`` and ``key`` say what the command does to read sharing (see the module doc).
        """
        if access != _NEUTRAL:
            shareable = self._shareable
            if access == _SHARE:
                same_key = shareable.get(key) if shareable else None  # type: ignore[arg-type]
                if same_key is not None:
                    leader = same_key.get((packed, raw))
                    if leader is not None:
                        follower: asyncio.Future[Any] = self._new_future()  # type: ignore[misc]
                        self._followers[leader].append(follower)
                        self.coalesced += 1
                        return follower
            elif shareable:
                if access == _WRITE_KEY:
                    shareable.pop(key, None)  # type: ignore[arg-type]
                else:
                    shareable.clear()
        if not self.connected or self._waiters or self.in_flight >= self.max_in_flight:
            return None
        self.in_flight += 1
        future = self._queue(packed, raw)
        if access == _SHARE:
            self._lead(future, packed, raw, key)
        return future

    def try_send_many(
        self, commands: Sequence[tuple[bytes, bool, int, str | None]]
    ) -> list[asyncio.Future[Any]] | None:
        """Queue a pipeline's commands, in order, if the lane is up and has room for all of them;
        None means take :meth:`try_send` / :meth:`send` one by one.

        :meth:`try_send` and :meth:`_queue` in one frame for the commands that share no read
        (the writes of a pipeline), with the deadline and the flush looked at once per pipeline.
        """
        if not self.connected or self._waiters or self.in_flight + len(commands) > self.max_in_flight:
            return None
        pending = self._pending
        was_idle = not pending
        out = self._out
        new_future = self._new_future
        futures = []
        for packed, raw, access, key in commands:
            if access == _SHARE:
                future = self.try_send(packed, raw, access, key)  # room was checked: never None
                assert future is not None
                futures.append(future)
                continue
            if access != _NEUTRAL:
                shareable = self._shareable
                if shareable:
                    if access == _WRITE_KEY:
                        shareable.pop(key, None)  # type: ignore[arg-type]
                    else:
                        shareable.clear()
            self.in_flight += 1
            future = new_future()  # type: ignore[misc]
            pending.append((future, raw))
            out.append(packed)  # _out is always the unwritten tail of _pending
            futures.append(future)
        if was_idle and pending and self._deadline is not None and self._timeout is not None:
            self._deadline.reschedule(self._loop.time() + self._timeout)  # type: ignore[union-attr]
        if not self._flush_scheduled and out:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)  # type: ignore[union-attr]
        return futures

    def _lead(self, future: asyncio.Future[Any], packed: bytes, raw: bool, key: str | None) -> None:
        """Let identical reads queued later in this batch share ``future``'s reply."""
        same_key = self._shareable.get(key)  # type: ignore[arg-type]
        if same_key is None:
            same_key = self._shareable[key] = {}  # type: ignore[index]
        same_key[(packed, raw)] = future
        self._followers[future] = []

    async def send(self, packed: bytes, raw: bool) -> asyncio.Future[Any]:
        """Slow path: connect if needed, then wait in FIFO order for room."""
        while True:
            if self._closed:
                raise RedisConnectionError("the client is closed")
            if not self.connected:
                await self._ensure_connected()
                continue
            if not self._waiters and self.in_flight < self.max_in_flight:
                self.in_flight += 1
                return self._queue(packed, raw)
            assert self._loop is not None
            waiter: asyncio.Future[int] = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                generation = await waiter
            except asyncio.CancelledError:
                if waiter.cancelled():
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                elif waiter.result() == self.generation:
                    self._release(1)  # woken with a slot we will not use
                raise
            if generation == self.generation and self.connected:
                return self._queue(packed, raw)  # the slot was reserved when we were woken

    def _queue(self, packed: bytes, raw: bool, future: asyncio.Future[Any] | None = None) -> asyncio.Future[Any]:
        assert self._loop is not None
        if future is None:
            future = self._new_future()  # type: ignore[misc]
        pending = self._pending
        pending.append((future, raw))
        self._out.append(packed)  # _out is always the unwritten tail of _pending
        if len(pending) == 1 and self._deadline is not None and self._timeout is not None:
            self._deadline.reschedule(self._loop.time() + self._timeout)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._shareable:
            self._shareable.clear()  # a read queued after this write would be a new batch
        out = self._out
        writer = self._writer
        # If the server has already closed the connection (it was killed or restarted), the
        # commands must not be written: _fail then carries them over to the next connection
        # instead of failing commands that never left the process.
        if not out or writer is None or writer.transport.is_closing():
            return
        if self._peer_closed():
            self._fail(RedisConnectionError("Connection closed by server."))
            return
        try:
            writer.write(out[0] if len(out) == 1 else b"".join(out))
        except (OSError, RuntimeError) as exc:
            self._fail(RedisConnectionError(f"Error while writing to Redis: {exc}"))
            return
        self._out = []

    def _peer_closed(self) -> bool:
        """Whether the server's end is closed, even if the event loop has not noticed it yet."""
        stream = self._stream
        if stream is None or stream.at_eof():
            return True
        # One poll(0) per batch: the FIN of a killed server is in the kernel before the loop's
        # next select reports it, and a command written after it would fail instead of waiting.
        return self._poller is not None and bool(self._poller.poll(0))

    def _release(self, count: int) -> None:
        self.in_flight -= count
        waiters = self._waiters
        while waiters and self.in_flight < self.max_in_flight:
            waiter = waiters.popleft()
            if not waiter.done():
                self.in_flight += 1
                waiter.set_result(self.generation)

    # -- connecting ---------------------------------------------------------------------------

    async def _ensure_connected(self) -> None:
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        task = self._connecting
        try:
            await asyncio.shield(task)
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            # Each caller gets its own exception: one object re-raised in many tasks piles up
            # their tracebacks.
            raise _copy_error(exc) from None
        except OSError as exc:
            raise RedisConnectionError(f"Error connecting to Redis: {exc}") from None
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and current is not None and not current.cancelling():
                raise RedisConnectionError("the client is closed") from None  # aclose() stopped the connect
            raise

    async def _connect(self) -> None:
        try:
            # redis-py's Connection does the handshake (AUTH, SELECT, TLS, CLIENT SETINFO) and
            # retries it with the pool's backoff policy; then its socket becomes ours.
            conn = new_connection(self.client.connection_pool)
            await conn.connect()  # type: ignore[no-untyped-call, unused-ignore]  # typed in some redis-py versions
            taken = take_socket(conn)
            self._loop = loop = asyncio.get_running_loop()
            self._new_future = (
                functools.partial(asyncio.Future, loop=loop)
                if type(loop).create_future is asyncio.BaseEventLoop.create_future
                else loop.create_future
            )
            self._conn = conn
            self._writer = taken.writer
            self._stream = taken.reader
            self._poller = _hangup_poller(taken.writer.transport)
            self._timeout = taken.reply_timeout
            self.generation += 1
            self.connected = True
            self._reader_task = asyncio.create_task(
                self._read_loop(taken.reader, taken.parser, self.generation), name="eventbus:autopipeline-reader"
            )
            self._release(0)  # wake callers that queued while we were down
        finally:
            self._connecting = None

    # -- receiving ----------------------------------------------------------------------------

    async def _read_loop(self, reader: asyncio.StreamReader, parser: Any, generation: int) -> None:
        pending = self._pending
        followers = self._followers
        error: Exception = RedisConnectionError("the client is closed")
        try:
            async with asyncio.timeout(None) as deadline:
                self._deadline = deadline
                loop = asyncio.get_running_loop()
                if pending and self._timeout is not None:
                    deadline.reschedule(loop.time() + self._timeout)
                while True:
                    data = await reader.read(_READ_SIZE)
                    if not data:
                        raise RedisConnectionError("Connection closed by server.")
                    parser.feed(data)
                    done = 0
                    while pending:
                        future, raw = pending[0]
                        reply = parser.gets(False) if raw else parser.gets()
                        if reply is NOT_ENOUGH_DATA:
                            break
                        pending.popleft()
                        done += 1
                        if not future.done():  # a cancelled caller's reply is simply dropped
                            future.set_result(reply)
                        if followers and future in followers:
                            for follower in followers.pop(future):
                                if not follower.done():
                                    follower.set_result(_copy_reply(reply))
                    else:
                        if parser.gets() is not NOT_ENOUGH_DATA:
                            raise InvalidResponse("a reply arrived for no pending command")
                    if done:
                        self._release(done)
                    if self._timeout is not None:
                        deadline.reschedule(loop.time() + self._timeout if pending else None)
        except TimeoutError:  # the reply deadline (asyncio's timeout is the builtin TimeoutError)
            error = RedisTimeoutError(f"Timeout reading from Redis: no reply within {self._timeout}s")
        except (RedisConnectionError, InvalidResponse) as exc:
            error = exc
        except OSError as exc:
            error = RedisConnectionError(f"Error while reading from Redis: {exc}")
        finally:
            if generation == self.generation:
                self._fail(error)

    def _fail(self, error: Exception) -> None:
        """Drop the connection. Commands written on it fail (they may have run, so they are never
        replayed); commands not yet written are sent again on the next connection."""
        if not self.connected:
            return
        self.connected = False
        self._deadline = None
        self._shareable.clear()  # the unwritten batch moves to _resend: nothing may join it now
        pending, self._pending = self._pending, deque()
        unwritten, self._out = self._out, []
        self.in_flight = 0
        if self._writer is not None:
            self._writer.transport.abort()
            self._writer = None
            self._stream = None
            self._poller = None
        if self._conn is not None:
            forget_socket(self._conn)
            self._conn = None
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
        self._reader_task = None
        written = len(pending) - len(unwritten)
        for index, (future, _) in enumerate(pending):
            if index == written:
                break
            self._fail_future(future, error)
        if unwritten and not self._closed:
            carried = [
                (future, raw, packed) for (future, raw), packed in zip(list(pending)[written:], unwritten, strict=True)
            ]
            task = asyncio.ensure_future(self._resend(carried))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        elif unwritten:
            for future, _ in list(pending)[written:]:
                self._fail_future(future, error)
        # Waiters retry: the next one to run reconnects.
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(-1)

    async def _resend(self, carried: list[tuple[asyncio.Future[Any], bool, bytes]]) -> None:
        """Send commands that never left the process on a new connection."""
        error: Exception = RedisConnectionError("the client is closed")
        try:
            while carried and not self._closed:
                await self._ensure_connected()
                rest = []
                for future, raw, packed in carried:
                    if future.done() and not self._followers.get(future):
                        self._followers.pop(future, None)
                        continue  # cancelled, and no other caller waits for its reply
                    if not self.connected:  # lost again while queueing: the rest waits for the next
                        rest.append((future, raw, packed))
                        continue
                    self.in_flight += 1
                    self._queue(packed, raw, future)
                carried = rest
        except (RedisConnectionError, RedisTimeoutError, ResponseError) as exc:
            error = exc
        finally:  # also on cancellation by aclose: no caller is left waiting forever
            for future, _, _ in carried:
                self._fail_future(future, error)

    def _fail_future(self, future: asyncio.Future[Any], error: Exception) -> None:
        """Fail a caller's future and every caller sharing its reply."""
        if not future.done():
            future.set_exception(_copy_error(error))
        for follower in self._followers.pop(future, ()):
            if not follower.done():
                follower.set_exception(_copy_error(error))

    async def aclose(self) -> None:
        """Let commands already sent finish (briefly), then close the connection."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        if self._pending and self.connected:
            self._flush()
            futures = [future for future, _ in self._pending]
            await asyncio.wait(futures, timeout=self._timeout or 5.0)
        task = self._reader_task
        self._fail(RedisConnectionError("the client is closed"))
        for resend in self._background:
            resend.cancel()
        await asyncio.gather(*self._background, *([task] if task else []), return_exceptions=True)


def _hangup_poller(transport: asyncio.BaseTransport) -> select.poll | None:
    """A poll object that reports only the peer's hang-up on the transport's socket (Linux)."""
    sock = transport.get_extra_info("socket")
    rdhup = getattr(select, "POLLRDHUP", 0)
    if sock is None or not rdhup or not hasattr(select, "poll"):
        return None
    poller = select.poll()
    poller.register(sock.fileno(), rdhup | select.POLLHUP | select.POLLERR)
    return poller


_CONTAINERS = frozenset({list, dict, set})
_no_containers = _CONTAINERS.isdisjoint


def _copy_reply(reply: Any) -> Any:
    """A follower's own copy of a shared reply: lists, dicts and sets are copied (a caller may
    mutate what it gets), errors are fresh instances (one exception raised in several tasks piles up their
    tracebacks); bytes, str, int and None are immutable."""
    kind = type(reply)
    if kind is list:
        if _no_containers(map(type, reply)):  # the usual flat reply (HGETALL's, LRANGE's): one C copy
            return reply.copy()
        return [_copy_reply(item) if type(item) in _CONTAINERS else item for item in reply]
    if kind is dict:  # hiredis 3 builds HGETALL's dict itself
        if _no_containers(map(type, reply.values())):
            return reply.copy()
        return {key: _copy_reply(value) if type(value) in _CONTAINERS else value for key, value in reply.items()}
    if kind is set:
        return set(reply)
    if isinstance(reply, Exception):
        return _copy_error(reply)
    return reply


def _copy_error(error: Exception) -> Exception:
    # A fresh instance per caller, for the same reason as in _ensure_connected.
    try:
        return type(error)(*error.args)
    except TypeError:
        return RedisConnectionError(str(error))


class AutoPipelineRedis(aioredis.Redis):
    """A ``redis.asyncio.Redis`` whose plain commands are auto-pipelined over ``lanes`` connections.

    Everything else (``pipeline()``, ``pubsub()``, blocking commands, transactions) uses the
    ``connection_pool`` as usual. ``lanes=0`` makes it a plain redis.asyncio client.
    """

    def __init__(self, *args: Any, lanes: int = 1, max_in_flight: int = 4096, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if wants_own_connection(self):
            lanes = 0
        self._lanes = [_Lane(self, max_in_flight) for _ in range(lanes)]
        self._next_lane: Callable[[], _Lane] | None = itertools.cycle(self._lanes).__next__ if lanes else None
        encoding = client_encoding(self)
        self._pack = command_packer(encoding)
        self._command_names: dict[Any, _Route] = {}
        # hiredis encodes str as strict UTF-8, which is redis-py's default.
        self._fast_pack_ok = codecs.lookup(encoding.encoding).name == "utf-8" and encoding.errors == "strict"

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        # The per-command hot path: every handler's command runs it, so it is kept to one frame
        # (route cached per name, hiredis packing, the sharing key and the callback lookup inline).
        name = args[0]
        route = self._command_names.get(name)
        if route is None:
            route = self._route(name)
        head, ntokens, shared, access, fast, plain_name = route
        if self._next_lane is None or shared is False or (shared is None and _blocks(args)):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        packed = None
        if fast and _all_fast_types(map(type, args)):
            try:  # noqa: SIM105 - per command: contextlib.suppress would cost a context manager
                packed = _pack_command(args)
            except (TypeError, UnicodeError):
                pass  # let _pack raise redis-py's own error
        if packed is None:
            packed = self._pack(head, ntokens, args)
        raw = NEVER_DECODE in options if options else False
        key = None
        if access <= _WRITE_KEY:
            key = args[1] if len(args) > 1 else None
            if type(key) is not str:
                key, access = self._sharing_key(args, access)
        lane = self._next_lane()
        future = lane.try_send(packed, raw, access, key)
        if future is None:
            future = await lane.send(packed, raw)
        response = await future
        callbacks: Any = self.response_callbacks
        if isinstance(response, Exception):
            return parse_reply(callbacks, name, plain_name, response, options)  # raises, or EMPTY_RESPONSE
        # parse_reply's usual case in this frame: a reply with no option but the cache keys.
        callback = (
            _dict_get(callbacks, name) if plain_name and type(callbacks) is CALLBACK_TABLE else callbacks.get(name)
        )
        if callback is None:
            return response
        if options and (len(options) > 1 or CACHE_KEYS not in options):
            result = parse_reply(callbacks, name, plain_name, response, options)
        else:
            result = callback(response)
        if type(result) in _NOT_AWAITABLE:
            return result
        return await result if inspect.isawaitable(result) else result

    def _sharing_key(self, args: tuple[Any, ...], access: int) -> tuple[str | None, int]:
        """The key read sharing is keyed by (as text), and the access that goes with it.

        A key that is neither str nor UTF-8 bytes, or a client that encodes otherwise, makes a
        read unshared and a write end all sharing.
        """
        key = args[1] if len(args) > 1 else None
        if type(key) is not str:
            key = _text_key(key) if self._fast_pack_ok else None
        if key is None:
            return None, _NEUTRAL if access == _SHARE else _BARRIER
        return key, access

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> aioredis.client.Pipeline:
        """A pipeline; without ``transaction`` its commands ride the shared lane (see
        :class:`LanePipeline`), with it they get a pooled connection as in redis.asyncio."""
        if transaction or shard_hint is not None or self._next_lane is None:
            return super().pipeline(transaction, shard_hint)
        pipe: aioredis.client.Pipeline = LanePipeline(self)
        return pipe

    async def run_on_lane(self, stack: Sequence[tuple[tuple[Any, ...], dict[str, Any]]]) -> list[Any] | None:
        """Queue a pipeline's commands on one lane, in order, and collect their replies (errors
        as values). None if one of them needs a connection of its own."""
        # Everything is packed before anything is queued (as redis-py's pipelines do): a command
        # that cannot be encoded fails the pipeline before any of it is sent.
        names = self._command_names
        prepared: list[tuple[bytes, bool, int, str | None]] = []
        plain_names = []
        for args, options in stack:
            head, ntokens, shared, access, fast, plain_name = names.get(args[0]) or self._route(args[0])
            if shared is not True and (shared is False or _blocks(args)):
                return None
            # The same preparation as execute_command's, which keeps it inline: that is the
            # per-command hot path, where a helper call would cost more than these lines.
            packed = None
            if fast and _all_fast_types(map(type, args)):
                try:  # noqa: SIM105 - as in execute_command
                    packed = _pack_command(args)
                except (TypeError, UnicodeError):
                    pass  # let _pack raise redis-py's own error
            if packed is None:
                packed = self._pack(head, ntokens, args)
            key = None
            if access <= _WRITE_KEY:
                key = args[1] if len(args) > 1 else None
                if type(key) is not str:
                    key, access = self._sharing_key(args, access)
            prepared.append((packed, NEVER_DECODE in options if options else False, access, key))
            plain_names.append(plain_name)
        assert self._next_lane is not None
        lane = self._next_lane()
        futures = lane.try_send_many(prepared)
        if futures is None:  # not connected or no room now: one at a time, FIFO behind earlier waiters
            futures = []
            for packed, raw, access, key in prepared:
                future = lane.try_send(packed, raw, access, key)
                if future is None:
                    future = await lane.send(packed, raw)
                futures.append(future)
        replies: list[Any] = []
        callbacks: Any = self.response_callbacks
        plain_table = type(callbacks) is CALLBACK_TABLE
        for (args, options), future, plain_name in zip(stack, futures, plain_names, strict=True):
            response = await future
            if isinstance(response, Exception):
                if isinstance(response, ResponseError):  # as in redis-py's pipelines: a value
                    replies.append(options.get(EMPTY_RESPONSE, response))
                    continue
            else:
                # parse_reply's usual case in this frame, as in execute_command.
                name = args[0]
                callback = _dict_get(callbacks, name) if plain_table and plain_name else callbacks.get(name)
                if callback is None:
                    replies.append(response)
                    continue
                if not options or (len(options) == 1 and CACHE_KEYS in options):
                    response = callback(response)
                    if type(response) not in _NOT_AWAITABLE and inspect.isawaitable(response):
                        response = await response
                    replies.append(response)
                    continue
            # A copy of the options: the stack stays as its caller queued it.
            response = parse_reply(callbacks, args[0], plain_name, response, dict(options))
            if type(response) not in _NOT_AWAITABLE and inspect.isawaitable(response):
                response = await response
            replies.append(response)
        return replies

    def _route(self, name: Any) -> _Route:
        """How to send a command name: its packed tokens, and whether it may share a lane."""
        tokens = name.encode().split() if isinstance(name, str) else bytes(name).split()
        first = tokens[0].upper().decode("ascii", "replace")
        shared = False if first in DEDICATED_COMMANDS else None if first in MAYBE_BLOCKING else True
        head = b"".join(b"$%d\r\n%s\r\n" % (len(token), token) for token in tokens)
        if len(tokens) > 1:
            access = _BARRIER  # a subcommand (CONFIG SET, OBJECT ...): not worth knowing each
        elif first in COALESCED_READS:
            access = _SHARE
        elif first in SINGLE_KEY_WRITES:
            access = _WRITE_KEY
        elif first in KEYLESS_OR_READ_ONLY:
            access = _NEUTRAL
        else:
            access = _BARRIER
        plain_name = type(name) in (str, bytes) and name == name.upper()
        route = (head, len(tokens), shared, access, len(tokens) == 1 and self._fast_pack_ok, plain_name)
        if len(self._command_names) < 1024:  # names come from code, but bound the cache anyway
            self._command_names[name] = route
        return route

    @property
    def coalesced(self) -> int:
        """Reads answered by another caller's identical read in the same batch (see the module doc)."""
        return sum(lane.coalesced for lane in self._lanes)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await asyncio.gather(*(lane.aclose() for lane in self._lanes))
        await super().aclose(close_connection_pool)


class LanePipeline(aioredis.client.Pipeline):
    """``pipeline(transaction=False)`` of an :class:`AutoPipelineRedis`: its commands are queued
    together, in order, on the shared lane (one round trip with whatever else is queued in that
    loop turn) instead of checking out a pooled connection. Replies, errors and
    ``raise_on_error`` are as in redis.asyncio. A pipeline that watches keys, starts ``multi()``,
    runs scripts or holds a blocking command falls back to a pooled connection.
    """

    # redis-py's Pipeline internals, bound as the methods: they run once per pipeline or per
    # queued command, where a frame of our own around them would cost.
    __init__ = init_lane_pipeline
    execute_command = queue_pipeline_command
    execute = execute_pipeline_on_lane


def _text_key(key: Any) -> str | None:
    """A key as the text sharing is keyed by, or None (not str or UTF-8 bytes)."""
    if type(key) is bytes:
        try:
            return key.decode()
        except UnicodeDecodeError:
            return None
    return None


def _blocks(args: tuple[Any, ...]) -> bool:
    """XREAD/XREADGROUP block only when given BLOCK."""
    return any(isinstance(arg, str | bytes) and arg.upper() in ("BLOCK", b"BLOCK") for arg in args[1:])


def autopipeline_client(
    url: str,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    lanes: int = 1,
    max_in_flight: int = 4096,
    **pool_kwargs: Any,
) -> AutoPipelineRedis:
    """An auto-pipelining client for ``url`` that opens at most ``max_connections`` connections.

    ``lanes`` of them are multiplexed; the rest form a BlockingConnectionPool (callers wait for a
    free connection instead of failing with "Too many connections"). With ``max_connections=1``
    there is no room for a lane and the client behaves like plain redis.asyncio. ``pool_kwargs``
    (``retry``, ``retry_on_error``, ...) go to the pool's connections, the lanes' included.
    """
    if max_connections < 1:
        raise ValueError("max_connections must be at least 1")
    lanes = max(0, min(lanes, max_connections - 1))
    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections - lanes, timeout=None, **pool_kwargs
    )
    client = AutoPipelineRedis(connection_pool=pool, lanes=lanes, max_in_flight=max_in_flight)
    own_pool(client)
    return client


__all__ = ["DEDICATED_COMMANDS", "AutoPipelineRedis", "autopipeline_client"]
