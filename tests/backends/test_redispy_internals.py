"""The contract with redis-py: every internal that eventbus/_backends/redispy_internals.py relies on,
checked against the installed redis-py (and a real redis-server where behaviour matters).

A failure names the redis-py version and the internal that changed. Until eventbus follows the
change, pin redis-py below that version or turn auto-pipelining off (``--no-autopipeline``,
``EVENTBUS_AUTOPIPELINE=0``): ``ctx.redis`` is then a plain ``redis.asyncio.Redis``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import hiredis
import pytest
import redis
import redis.asyncio as aioredis
import redis.client
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import BusyLoadingError, DataError, NoScriptError, ResponseError

from eventbus._backends.autopipeline import AutoPipelineRedis, LanePipeline, autopipeline_client
from eventbus._backends.redispy_internals import (
    EMPTY_RESPONSE,
    FAST_TYPES,
    NEVER_DECODE,
    NOT_ENOUGH_DATA,
    client_encoding,
    close_sentinel,
    command_packer,
    forget_socket,
    init_lane_pipeline,
    new_connection,
    own_pool,
    parse_reply,
    queue_pipeline_command,
    reresolve_master,
    take_socket,
    wants_own_connection,
)
from tests.redis_server import RedisServer

VERSION = redis.__version__


def changed(internal: str, detail: str) -> str:
    """The failure message: which redis-py, which internal, what to do meanwhile."""
    return (
        f"redis-py {VERSION} changed {internal}: {detail}. eventbus's auto-pipelining relies on it "
        "(eventbus/_backends/redispy_internals.py): until eventbus follows, pin redis-py below "
        f"{VERSION} or turn auto-pipelining off (--no-autopipeline, EVENTBUS_AUTOPIPELINE=0)"
    )


def has_attributes(obj: Any, internal: str, *names: str) -> None:
    missing = [name for name in names if not hasattr(obj, name)]
    assert not missing, changed(internal, f"{type(obj).__name__} has no {', '.join(missing)}")


def parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


async def client_names(server: RedisServer) -> list[str]:
    client = aioredis.Redis(port=server.port)
    try:
        return [entry["name"] for entry in await client.client_list()]
    finally:
        await client.aclose()


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        assert loop.time() < deadline, what
        await asyncio.sleep(0.02)


async def roundtrip(taken: Any, *args: Any) -> Any:
    """Send one command on a taken socket and parse its reply with the taken parser."""
    taken.writer.write(hiredis.pack_command(args))
    while True:
        reply = taken.parser.gets()
        if reply is not NOT_ENOUGH_DATA:
            return reply
        data = await taken.reader.read(65536)
        assert data, "the server closed the connection"
        taken.parser.feed(data)


# -- a connection's socket, taken over by a lane ---------------------------------------------------


@pytest.mark.both_loops
async def test_a_connection_built_like_the_pools_hands_over_its_handshaken_socket(redis_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/3?socket_timeout=2.5&client_name=lane-contract"
    pool = aioredis.BlockingConnectionPool.from_url(url)
    has_attributes(
        pool, "ConnectionPool (what a lane builds its connection from)", "connection_class", "connection_kwargs"
    )
    conn = new_connection(pool)
    assert isinstance(conn, pool.connection_class), changed("ConnectionPool.connection_class", "not a class")
    await conn.connect()
    try:
        has_attributes(conn, "AbstractConnection (the socket a lane takes over)", "_reader", "_writer", "_parser")
        has_attributes(conn._parser, "the connection's parser (error replies)", "parse_error")
        has_attributes(conn, "AbstractConnection (encoding, reply timeout)", "encoder", "socket_timeout")
        taken = take_socket(conn)
        assert isinstance(taken.reader, asyncio.StreamReader), changed("AbstractConnection._reader", "no StreamReader")
        assert isinstance(taken.writer, asyncio.StreamWriter), changed("AbstractConnection._writer", "no StreamWriter")
        assert taken.reply_timeout == 2.5, changed("AbstractConnection.socket_timeout", f"{taken.reply_timeout!r}")
        # connect() did the handshake: the URL's database and client name are already set.
        info = await roundtrip(taken, "CLIENT", "INFO")
        assert b" db=3 " in info and b" name=lane-contract " in info, changed("AbstractConnection.connect()", info)
        # An error reply is an instance of redis-py's class for it, as a value (not raised).
        await roundtrip(taken, "SET", "text", "x")
        error = await roundtrip(taken, "INCR", "text")
        assert isinstance(error, ResponseError) and "not an integer" in str(error), changed(
            "the parser's parse_error", repr(error)
        )
        assert await roundtrip(taken, "GET", "text") == b"x"
    finally:
        await conn.disconnect()
        await pool.aclose()


async def test_the_taken_parser_decodes_as_the_client_asked(redis_server: RedisServer) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(f"{redis_server.url}?decode_responses=True&encoding=latin-1")
    conn = new_connection(pool)
    await conn.connect()
    try:
        taken = take_socket(conn)
        await roundtrip(taken, "SET", "k", "é".encode("latin-1"))
        assert await roundtrip(taken, "GET", "k") == "é", changed("Connection.encoder", "decode_responses/encoding")
    finally:
        await conn.disconnect()
        await pool.aclose()


def test_parse_error_gives_redis_pys_exception_classes() -> None:
    parse_error = aioredis.Connection(port=1)._parser.parse_error
    assert type(parse_error("NOSCRIPT No matching script")) is NoScriptError, changed("parse_error", "NOSCRIPT")
    # LOADING is a ConnectionError in redis-py (retried, never an EMPTY_RESPONSE): parse_reply raises it.
    loading = parse_error("LOADING Redis is loading the dataset in memory")
    assert isinstance(loading, BusyLoadingError), changed("parse_error", f"LOADING gives {type(loading)}")
    with pytest.raises(BusyLoadingError):
        parse_reply({}, "GET", True, loading, {EMPTY_RESPONSE: None})


async def test_forgetting_the_socket_leaves_a_connection_that_connects_again(redis_server: RedisServer) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(redis_server.url)
    conn = new_connection(pool)
    await conn.connect()
    has_attributes(conn, "AbstractConnection (dropping an aborted socket)", "_close")
    take_socket(conn).writer.transport.abort()
    forget_socket(conn)
    assert not conn.is_connected, changed("AbstractConnection._close()", "the connection still holds its streams")
    await conn.connect()
    await conn.send_command("PING")
    assert await conn.read_response() == b"PONG"
    await conn.disconnect()
    await pool.aclose()


# -- the client ---------------------------------------------------------------------------------


def test_a_client_that_needs_its_own_connection_is_recognised() -> None:
    has_attributes(aioredis.Redis(), "Redis (single_connection_client)", "single_connection_client")
    assert not wants_own_connection(aioredis.Redis())
    assert wants_own_connection(aioredis.Redis(single_connection_client=True))
    assert wants_own_connection(aioredis.Redis(protocol=3)), changed("ConnectionPool.connection_kwargs", "protocol")
    assert not AutoPipelineRedis(protocol=3)._lanes


async def test_own_pool_makes_aclose_close_the_pool(redis_server: RedisServer) -> None:
    pool = aioredis.BlockingConnectionPool.from_url(f"{redis_server.url}?client_name=own-pool-contract")
    client = aioredis.Redis(connection_pool=pool)
    own_pool(client)
    assert await client.ping()
    assert "own-pool-contract" in await client_names(redis_server)
    await client.aclose()

    async def closed() -> bool:
        return "own-pool-contract" not in await client_names(redis_server)

    await until(closed, changed("Redis.auto_close_connection_pool", "aclose() left the pool's connection open"))


# Arguments whose encoding the packer copies from redis-py's Encoder.
PACKED_ARGS: list[tuple[Any, ...]] = [
    ("SET", "k", "héllo"),
    ("SET", b"k", b"\x00\xff\r\n"),
    ("HSET", "h", "n", 0, "neg", -17, "big", 2**70),
    ("SET", "f", 0.1),
    ("MSET", "a", 1e20, "b", -0.0, "c", 1 / 3, "d", 2.0, "e", float("inf")),
    ("SET", "m", memoryview(b"view")),
    ("SET", "ba", bytearray(b"array")),
    ("CONFIG GET", "maxmemory"),
]


@pytest.mark.parametrize("encoding", ["utf-8", "latin-1"])
def test_the_packer_encodes_as_redis_py(encoding: str) -> None:
    client = aioredis.Redis(encoding=encoding)
    settings = client_encoding(client)
    assert settings.encoding == encoding, changed("ConnectionPool.get_encoder()", "encoding")
    pack = command_packer(settings)
    conn = aioredis.Connection(encoding=encoding)
    for args in [*PACKED_ARGS, ("SET", "k", True), ("SET", "k", None), ("SET", "k", object())]:
        tokens = args[0].encode().split()
        head, ntokens = b"".join(b"$%d\r\n%s\r\n" % (len(token), token) for token in tokens), len(tokens)
        ours = packed(lambda head=head, n=ntokens, args=args: pack(head, n, args))
        theirs = packed(lambda args=args: conn.pack_command(*args))
        assert ours == theirs, changed("Encoder.encode / pack_command", f"{args!r}: {ours!r} != {theirs!r}")


def packed(pack: Callable[[], Any]) -> bytes | str:
    """The packed bytes, or the name of the error (redis-py's DataError for what it cannot encode)."""
    try:
        result = pack()
    except DataError as exc:
        return type(exc).__name__
    return result if isinstance(result, bytes) else b"".join(bytes(part) for part in result)


def test_hiredis_packs_the_fast_types_as_redis_py() -> None:
    conn = aioredis.Connection()
    for args in [("SET", "k", "héllo"), ("SET", b"k", b"\x00\r\n"), ("HSET", "h", "n", -5, "big", 2**70)]:
        assert set(map(type, args)) <= FAST_TYPES
        expected = b"".join(bytes(part) for part in conn.pack_command(*args))
        assert hiredis.pack_command(args) == expected, changed("pack_command", f"{args!r} differs from hiredis's")


# -- what parse_response does with a reply ---------------------------------------------------------


def test_the_options_are_redis_pys() -> None:
    assert getattr(redis.client, "NEVER_DECODE", None) == NEVER_DECODE, changed("redis.client.NEVER_DECODE", "gone")
    assert getattr(redis.client, "EMPTY_RESPONSE", None) == EMPTY_RESPONSE, changed(
        "redis.client.EMPTY_RESPONSE", "gone"
    )
    assert parameters(aioredis.Redis.parse_response)[:3] == ["self", "connection", "command_name"], changed(
        "Redis.parse_response", "its signature"
    )


def test_the_callback_table_stores_its_keys_upper_cased() -> None:
    callbacks = aioredis.Redis().response_callbacks
    table = getattr(redis.client, "CaseInsensitiveDict", None)
    if type(callbacks) is not table:
        return  # parse_reply then uses the table's own get(): nothing assumed
    assert all(key == key.upper() for key in callbacks), changed("CaseInsensitiveDict", "keys not upper-cased")
    assert dict.get(callbacks, "HGETALL") is callbacks.get("hgetall"), changed("CaseInsensitiveDict", "lookup")


Call = Callable[[aioredis.Redis], Awaitable[Any]]
# Commands whose methods pass options to parse_response, or whose replies go through callbacks
# that take options; each runs through the lane and through redis-py on the same data.
PARSED: list[tuple[str, Call]] = [
    ("EMPTY_RESPONSE (mget of no keys)", lambda r: r.mget([])),
    ("NEVER_DECODE (dump)", lambda r: r.dump("h")),
    ("NEVER_DECODE (info)", lambda r: r.info("server")),
    ("callback options (zrange withscores)", lambda r: r.zrange("z", 0, -1, withscores=True)),
    ("callback options (zrange score_cast_func)", lambda r: r.zrange("z", 0, -1, withscores=True, score_cast_func=str)),
    ("keys option (hgetall)", lambda r: r.hgetall("h")),
    ("a lower-case command name", lambda r: r.execute_command("hget", "h", "a")),
    ("xinfo_stream", lambda r: r.xinfo_stream("s")),
    ("config_get", lambda r: r.config_get("maxmemory*")),
    ("an error reply", lambda r: r.incr("h")),
]


@pytest.fixture
async def clients(redis_server: RedisServer, request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    decode = request.param
    plain = aioredis.Redis(port=redis_server.port, decode_responses=decode)
    lane = autopipeline_client(redis_server.url, decode_responses=decode)
    assert lane._next_lane is not None
    await plain.hset("h", mapping={"a": "1", "é": "2"})
    await plain.zadd("z", {"x": 1.5, "y": 2})
    await plain.xadd("s", {"f": "v"})
    yield plain, lane
    await plain.aclose()
    await lane.aclose()


async def outcome(call: Call, client: Any) -> tuple[str, Any]:
    try:
        return "value", await call(client)
    except Exception as exc:  # noqa: BLE001 - any error, as long as both clients raise the same
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize("clients", [False, True], indirect=True, ids=["bytes", "decoded"])
@pytest.mark.parametrize(("what", "call"), PARSED, ids=[name for name, _ in PARSED])
async def test_replies_through_the_lane_are_parsed_as_redis_py_parses_them(
    clients: tuple[Any, Any], what: str, call: Call
) -> None:
    plain, lane = clients
    expected = await outcome(call, plain)
    if what.startswith("NEVER_DECODE (info)"):
        # Figures of the server move between two calls; the shape and the types must not.
        got = await outcome(call, lane)
        assert got[1].keys() == expected[1].keys(), changed("Redis.parse_response", what)
        assert got[1]["redis_version"] == expected[1]["redis_version"], changed("Redis.parse_response", what)
        return
    assert await outcome(call, lane) == expected, changed("Redis.parse_response", what)
    pipe = lane.pipeline(transaction=False)
    await call(pipe)
    reply = (await pipe.execute(raise_on_error=False))[0]
    kind, value = expected
    if kind == "value":
        assert reply == value, changed("Pipeline.execute's parsing", what)
    else:
        assert type(reply).__name__ == kind, changed("Pipeline.execute's parsing", what)


# -- pipeline(transaction=False) on a lane ---------------------------------------------------------

PIPELINE_STATE = ("command_stack", "watching", "explicit_transaction", "scripts", "connection")


def test_the_pipeline_constructor_takes_what_init_lane_pipeline_passes() -> None:
    names = parameters(aioredis.client.Pipeline.__init__)
    assert {"connection_pool", "response_callbacks", "transaction", "shard_hint"} <= set(names), changed(
        "Pipeline.__init__", f"its parameters are {names}"
    )
    client = AutoPipelineRedis()
    ours, theirs = LanePipeline(client), aioredis.Redis.pipeline(client, transaction=False)
    assert set(vars(ours)) - {"run_on_lane"} == set(vars(theirs)), changed("Pipeline.__init__", "the state it sets")
    for name, value in vars(theirs).items():
        mine = vars(ours)[name]
        assert mine is value or mine == value or type(mine) is type(value), changed("Pipeline.__init__", name)
    has_attributes(
        theirs,
        "Pipeline (what a lane pipeline reads)",
        *PIPELINE_STATE,
        "immediate_execute_command",
        "raise_first_error",
        "reset",
    )
    plain = aioredis.client.Pipeline.__new__(aioredis.client.Pipeline)
    init_lane_pipeline(plain, client)
    assert not plain.is_transaction and plain.command_stack == []


def test_a_lane_pipeline_queues_as_redis_pys_pipeline() -> None:
    client = AutoPipelineRedis()
    ours, theirs = LanePipeline(client), aioredis.Redis.pipeline(client, transaction=False)
    for pipe in (ours, theirs):
        assert pipe.set("a", 1) is pipe
        pipe.hgetall("h")
        pipe.mget([])
    assert ours.command_stack == theirs.command_stack, changed("Pipeline.execute_command", "what it queues")
    assert queue_pipeline_command(ours, "GET", "x") is ours


@pytest.mark.parametrize("raise_on_error", [True, False])
async def test_a_lane_pipeline_executes_and_resets_as_redis_pys(
    raise_on_error: bool, redis_server: RedisServer
) -> None:
    lane, plain = autopipeline_client(redis_server.url), aioredis.Redis(port=redis_server.port)
    try:
        results = []
        for client in (lane, plain):
            await plain.flushall()
            pipe = aioredis.Redis.pipeline(client, transaction=False)
            if client is lane:
                pipe = client.pipeline(transaction=False)
                assert isinstance(pipe, LanePipeline)
            pipe.set("a", "x").incr("a").get("a").hgetall("missing")
            try:
                results.append(("value", await pipe.execute(raise_on_error=raise_on_error)))
            except ResponseError as exc:
                results.append(("raised", str(exc)))
            # What reset() leaves: the same state after the lane as after redis-py's execute.
            results.append({name: getattr(pipe, name) for name in PIPELINE_STATE})
        ours, theirs = results[:2], results[2:]
        if not raise_on_error:  # error replies are values: compare them by type and text
            ours[0] = ("value", [repr(r) if isinstance(r, Exception) else r for r in ours[0][1]])
            theirs[0] = ("value", [repr(r) if isinstance(r, Exception) else r for r in theirs[0][1]])
        assert ours == theirs, changed("Pipeline.execute / reset / raise_first_error", f"{ours} != {theirs}")
    finally:
        await lane.aclose()
        await plain.aclose()


async def test_a_lane_pipeline_that_watches_or_is_in_multi_runs_as_redis_pys(redis_server: RedisServer) -> None:
    client = autopipeline_client(redis_server.url)
    try:
        pipe = client.pipeline(transaction=False)
        assert await pipe.watch("k"), changed("Pipeline.watch", "WATCH not run at once")
        pipe.multi()
        pipe.set("k", "1").incr("k")
        assert await pipe.execute() == [True, 2], changed("Pipeline.execute", "a watched transaction")
        assert not pipe.watching and pipe.connection is None, changed("Pipeline.reset()", "after a transaction")
    finally:
        await client.aclose()


# -- sentinel ---------------------------------------------------------------------------------


class Announcer:
    """Stands in for the sentinels' answer (``Sentinel.discover_master``); the servers are real."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        return self.address


async def test_re_resolving_a_moved_master_drops_the_idle_connections_to_the_old_one(
    redis_server: RedisServer, own_redis_server: RedisServer
) -> None:
    announcer = Announcer(("127.0.0.1", redis_server.port))
    pool = SentinelConnectionPool("svc", announcer, client_name="reresolve-contract")
    client = aioredis.Redis(connection_pool=pool)
    try:
        assert await client.ping()
        assert "reresolve-contract" in await client_names(redis_server)
        announcer.address = ("127.0.0.1", own_redis_server.port)
        await reresolve_master(client)

        async def dropped() -> bool:
            return "reresolve-contract" not in await client_names(redis_server)

        await until(dropped, changed("SentinelConnectionPool.get_master_address()", "idle connections kept"))
        assert await client.ping()
        assert "reresolve-contract" in await client_names(own_redis_server)
    finally:
        await client.aclose()
        await pool.disconnect()


async def test_closing_a_sentinel_closes_the_clients_it_asks_with(redis_server: RedisServer) -> None:
    sentinel = Sentinel([("127.0.0.1", redis_server.port)], sentinel_kwargs={"client_name": "sentinel-contract"})
    has_attributes(sentinel, "Sentinel (its clients)", "sentinels")
    assert await sentinel.sentinels[0].ping()
    assert "sentinel-contract" in await client_names(redis_server)
    await close_sentinel(sentinel)

    async def closed() -> bool:
        return "sentinel-contract" not in await client_names(redis_server)

    await until(closed, changed("Sentinel.aclose()", "a sentinel client stayed connected"))
