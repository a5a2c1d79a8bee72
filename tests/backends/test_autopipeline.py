"""The auto-pipelining command client against real redis-server processes.

Parity is checked by running the same commands through plain redis.asyncio and through
AutoPipelineRedis on the same server and comparing the Python values they return.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from eventbus._backends import command_client
from eventbus._backends.autopipeline import AutoPipelineRedis, autopipeline_client
from tests.fault.helpers import eventually
from tests.redis_server import RedisServer, free_port

Op = Callable[[aioredis.Redis], Awaitable[Any]]

# Each op runs on a flushed database, in order; later ops read what earlier ones wrote.
PARITY_OPS: list[tuple[str, Op]] = [
    ("set", lambda r: r.set("s", "héllo")),
    ("set float", lambda r: r.set("f", 0.1)),
    ("set floats encoded as redis-py does", lambda r: r.mset({"f1": 1e20, "f2": -0.0, "f3": 1 / 3, "f4": 2.0})),
    ("get floats", lambda r: r.mget("f1", "f2", "f3", "f4")),
    ("set bytes nx", lambda r: r.set(b"b", b"\x00\xff", nx=True)),
    ("get", lambda r: r.get("s")),
    ("get float", lambda r: r.get("f")),
    ("get missing", lambda r: r.get("missing")),
    ("mset", lambda r: r.mset({"m1": 1, "m2": "two"})),
    ("mget", lambda r: r.mget("m1", "m2", "missing")),
    ("incr", lambda r: r.incr("n", 5)),
    ("incrbyfloat", lambda r: r.incrbyfloat("x", 1.25)),
    ("append", lambda r: r.append("s", "!")),
    ("getrange", lambda r: r.getrange("s", 0, 2)),
    ("set ex", lambda r: r.set("e", "v", ex=100)),
    ("ttl", lambda r: r.ttl("e")),
    ("expire", lambda r: r.expire("s", 100)),
    ("exists", lambda r: r.exists("s", "missing", "n")),
    ("type", lambda r: r.type("n")),
    ("hset", lambda r: r.hset("h", mapping={"a": 1, "b": "x", "c": 2.5})),
    ("hgetall", lambda r: r.hgetall("h")),
    ("hgetall missing", lambda r: r.hgetall("missing")),
    ("hincrbyfloat", lambda r: r.hincrbyfloat("h", "c", 0.25)),
    ("hincrby", lambda r: r.hincrby("h", "a", 3)),
    ("hmget", lambda r: r.hmget("h", ["a", "zz"])),
    ("hexists", lambda r: r.hexists("h", "a")),
    ("hkeys", lambda r: r.hkeys("h")),
    ("hdel", lambda r: r.hdel("h", "b")),
    ("sadd", lambda r: r.sadd("set", "a", "b", "c")),
    ("smembers", lambda r: r.smembers("set")),
    ("sismember", lambda r: r.sismember("set", "b")),
    ("smismember", lambda r: r.smismember("set", ["a", "z"])),
    ("scard", lambda r: r.scard("set")),
    ("zadd", lambda r: r.zadd("z", {"a": 1, "b": 2.5})),
    ("zrange withscores", lambda r: r.zrange("z", 0, -1, withscores=True)),
    ("zscore", lambda r: r.zscore("z", "b")),
    ("zincrby", lambda r: r.zincrby("z", 1, "a")),
    ("lpush", lambda r: r.lpush("l", 1, 2, 3)),
    ("lrange", lambda r: r.lrange("l", 0, -1)),
    ("lpop count", lambda r: r.lpop("l", 2)),
    ("bitfield", lambda r: r.bitfield("hist").incrby("u16", "#3", 7).get("u16", "#3").execute()),
    ("xadd", lambda r: r.xadd("st", {"who": "ann", "qty": 2}, id="1-1")),
    ("xadd 2", lambda r: r.xadd("st", {"who": "bob"}, id="2-0")),
    ("xrange", lambda r: r.xrange("st")),
    ("xlen", lambda r: r.xlen("st")),
    ("xread", lambda r: r.xread({"st": "0-0"}, count=1)),
    ("publish", lambda r: r.publish("chan", "payload")),
    ("config get", lambda r: r.config_get("maxmemory-policy")),
    ("ping", lambda r: r.ping()),
    ("echo", lambda r: r.echo("hi")),
    ("dbsize", lambda r: r.dbsize()),
    ("delete", lambda r: r.delete("s", "missing")),
    ("eval", lambda r: r.eval("return {1, 'two', {3}}", 0)),
]


def written(client: Any) -> int:
    """How many commands ``client`` has written to its connections and awaits replies to (none
    still waiting to be flushed)."""
    lanes = client._lanes
    return 0 if any(lane._out for lane in lanes) else sum(len(lane._pending) for lane in lanes)


async def run_ops(client: aioredis.Redis, server: RedisServer) -> list[tuple[str, Any]]:
    with server.client() as sync:
        sync.flushall()
    results = []
    for name, op in PARITY_OPS:
        results.append((name, await op(client)))
    return results


@pytest.fixture
async def auto(redis_server: RedisServer) -> AsyncIterator[AutoPipelineRedis]:
    client = autopipeline_client(redis_server.url, max_connections=4)
    yield client
    await client.aclose()


@pytest.mark.parametrize("query", ["", "?decode_responses=true"])
async def test_returns_the_same_python_values_as_redis_asyncio(redis_server: RedisServer, query: str) -> None:
    plain = aioredis.Redis.from_url(redis_server.url + query)
    auto = autopipeline_client(redis_server.url + query)
    try:
        expected = await run_ops(plain, redis_server)
        got = await run_ops(auto, redis_server)
    finally:
        await plain.aclose()
        await auto.aclose()
    for (name, want), (_, have) in zip(expected, got, strict=True):
        assert (name, have) == (name, want)
        assert type(have) is type(want), name
    assert dict(expected)["hgetall"] == {b"a": b"1", b"b": b"x", b"c": b"2.5"} or query
    assert dict(expected)["hincrbyfloat"] == 2.75


async def test_concurrent_commands_share_the_lane_connection(auto: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    results = await asyncio.gather(*(auto.incr("n") for _ in range(1000)))
    assert sorted(results) == list(range(1, 1001))
    # The lane is one connection and plain commands never touch the pool.
    assert sync_redis.info("clients")["connected_clients"] == 2  # the lane and sync_redis


async def test_an_error_reaches_only_the_caller_that_caused_it(auto: AutoPipelineRedis) -> None:
    await auto.set("str", "x")
    results = await asyncio.gather(
        auto.incr("a"),
        auto.hgetall("str"),
        auto.incr("a"),
        auto.evalsha("0" * 40, 0),
        auto.sadd("s", 1),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2 and results[4] == 1
    assert isinstance(results[1], redis.ResponseError) and "WRONGTYPE" in str(results[1])
    assert isinstance(results[3], redis.exceptions.NoScriptError)
    with pytest.raises(redis.DataError, match="Invalid input of type"):
        await auto.set("k", None)  # type: ignore[arg-type]
    with pytest.raises(redis.DataError, match="Invalid input of type"):
        await auto.set("k", True)  # type: ignore[arg-type]
    assert await auto.get("str") == b"x"


async def test_ten_thousand_concurrent_callers_with_a_small_in_flight_cap(redis_server: RedisServer) -> None:
    client = autopipeline_client(redis_server.url, max_connections=3, max_in_flight=64)
    try:
        results = await asyncio.gather(*(client.incr("n") for _ in range(10_000)))
        assert sorted(results) == list(range(1, 10_001))
        blocked = await asyncio.gather(*(client.blpop(["q"], timeout=0.01) for _ in range(20)))
        assert blocked == [None] * 20  # 20 blocking calls on a pool of 2: they wait, never fail
    finally:
        await client.aclose()


async def test_cancelled_callers_do_not_shift_replies(auto: AutoPipelineRedis) -> None:
    await auto.set("k", "v")
    tasks = [asyncio.create_task(auto.incr("n")) for _ in range(50)]
    gets = [asyncio.create_task(auto.get("k")) for _ in range(50)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert await asyncio.gather(*gets) == [b"v"] * 50
    assert await auto.get("k") == b"v"


async def test_pipelines_transactions_watch_pubsub_and_blocking_commands_still_work(
    auto: AutoPipelineRedis,
) -> None:
    async with auto.pipeline(transaction=True) as pipe:
        pipe.incr("n").hset("h", "f", 1).hgetall("h")
        assert await pipe.execute() == [1, 1, {b"f": b"1"}]
    async with auto.pipeline() as pipe:
        await pipe.watch("n")
        value = int(await pipe.get("n"))
        pipe.multi()
        pipe.set("n", value + 1)
        await pipe.execute()
    assert await auto.get("n") == b"2"

    async with auto.pubsub() as pubsub:
        await pubsub.subscribe("news")
        assert await auto.publish("news", "hi") == 1
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        while message is None:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message["data"] == b"hi"

    # A blocked BLPOP holds a pool connection, not the lane: other commands go on meanwhile.
    popped = asyncio.create_task(auto.blpop(["queue"], timeout=10))

    async def blocked() -> bool:
        return int((await auto.info("clients"))["blocked_clients"]) == 1

    await eventually(blocked, what="BLPOP blocking")
    assert await auto.incr("n") == 3
    await auto.rpush("queue", "job")
    assert await asyncio.wait_for(popped, 10) == (b"queue", b"job")
    assert await auto.xread({"st": "$"}, block=10) == []

    async with auto.lock("resource", timeout=5):
        assert await auto.exists("resource") == 1
    assert await auto.exists("resource") == 0


async def test_aclose_lets_sent_commands_finish_then_refuses_new_ones(redis_server: RedisServer) -> None:
    client = autopipeline_client(redis_server.url)
    await client.ping()
    in_flight = [asyncio.create_task(client.incr("n")) for _ in range(100)]
    await asyncio.sleep(0)  # queued; aclose flushes them and waits for their replies
    await client.aclose()
    assert sorted(await asyncio.gather(*in_flight)) == list(range(1, 101))
    with pytest.raises(redis.ConnectionError):
        await client.incr("n")


async def test_command_client_is_the_auto_pipelining_client(redis_server: RedisServer) -> None:
    client = command_client(redis_server.url, max_connections=8)
    try:
        assert isinstance(client, AutoPipelineRedis)
        assert await client.hincrbyfloat("h", "f", 1.5) == 1.5
    finally:
        await client.aclose()


async def test_one_connection_means_no_lane(redis_server: RedisServer) -> None:
    client = autopipeline_client(redis_server.url, max_connections=1)
    try:
        assert await asyncio.gather(*(client.incr("n") for _ in range(100))) != []
        assert await client.get("n") == b"100"
    finally:
        await client.aclose()


@pytest.mark.fault
async def test_connection_loss_fails_in_flight_callers_and_later_calls_reconnect(
    own_redis_server: RedisServer,
) -> None:
    client = autopipeline_client(own_redis_server.url, max_connections=2)
    try:
        assert await client.ping() is True
        own_redis_server.pause()  # commands are written but no reply comes back
        in_flight = [asyncio.create_task(client.incr("n")) for _ in range(100)]
        await eventually(lambda: written(client) == 100, what="the commands written")
        own_redis_server.kill()
        results = await asyncio.wait_for(asyncio.gather(*in_flight, return_exceptions=True), 10)
        assert all(isinstance(result, redis.ConnectionError) for result in results), results[:3]

        own_redis_server.start()
        assert await asyncio.wait_for(client.incr("n"), 30) == 1
        assert await asyncio.wait_for(asyncio.gather(*(client.incr("n") for _ in range(100))), 10)
        assert await client.get("n") == b"101"
    finally:
        own_redis_server.resume() if own_redis_server.process else None
        await client.aclose()


@pytest.mark.fault
async def test_a_silent_server_times_out_in_flight_callers(own_redis_server: RedisServer) -> None:
    client = autopipeline_client(own_redis_server.url + "?socket_timeout=0.5", max_connections=2)
    try:
        assert await client.ping() is True
        own_redis_server.pause()
        with pytest.raises(redis.TimeoutError):
            await asyncio.wait_for(client.get("k"), 10)
        own_redis_server.resume()
        assert await asyncio.wait_for(client.get("k"), 10) is None
    finally:
        own_redis_server.resume()
        await client.aclose()


@pytest.mark.fault
async def test_a_command_issued_just_after_the_server_died_waits_for_the_restart(
    own_redis_server: RedisServer,
) -> None:
    # Never written, so safe to send on the next connection (unlike in-flight commands).
    client = command_client(own_redis_server.url, max_connections=2)
    try:
        assert await client.incr("n") == 1
        own_redis_server.kill()
        pending = asyncio.create_task(client.incr("n"))
        await asyncio.sleep(0.3)  # waits for something NOT to happen: the command must not fail meanwhile
        assert not pending.done()
        own_redis_server.start()
        assert await asyncio.wait_for(pending, 20) == 1  # the restarted server starts empty
    finally:
        await client.aclose()


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[RedisServer, int]]:
    """A redis-server with a TLS port beside its plain one (the plain one is for the fixture)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    openssl = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
    subprocess.run([*openssl, "-keyout", key, "-out", cert], check=True, capture_output=True)
    tls_port = free_port()
    tls_args = ["--tls-port", str(tls_port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
                "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]  # fmt: skip
    server = RedisServer(extra_args=tls_args)
    try:
        server.start()
    except RuntimeError as exc:
        pytest.skip(f"this redis-server has no TLS: {exc}")
    yield server, tls_port
    server.stop()


async def test_tls_auth_and_database_from_the_url(tls_server: tuple[RedisServer, int]) -> None:
    server, tls_port = tls_server
    with server.client() as admin:
        admin.config_set("requirepass", "s3cret")
    client = autopipeline_client(f"rediss://:s3cret@127.0.0.1:{tls_port}/2?ssl_cert_reqs=none")
    try:
        assert await asyncio.gather(*(client.incr("n") for _ in range(100)))
        assert await client.hincrbyfloat("h", "f", 0.5) == 0.5
    finally:
        await client.aclose()
    with redis.Redis(port=server.port, password="s3cret", db=2) as check:
        assert check.get("n") == b"100"


# -- read coalescing ------------------------------------------------------------------------------
# The rule (eventbus._backends.autopipeline's module doc): an identical read-only command on one key joins
# an earlier one queued in the same unwritten batch, unless a command that may write that key was
# queued in between. Counted on the server with INFO commandstats.


def server_calls(sync: redis.Redis, command: str) -> int:
    stats = sync.info("commandstats").get(f"cmdstat_{command}")
    return int(stats["calls"]) if stats else 0


@pytest.fixture
async def warm(auto: AutoPipelineRedis, sync_redis: redis.Redis) -> AutoPipelineRedis:
    """The client with its lane connected (a batch queued while connecting is never shared)."""
    await auto.ping()
    sync_redis.config_resetstat()
    return auto


async def test_identical_reads_in_one_batch_share_one_command(warm: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    sync_redis.hset("order:7", mapping={"who": "ann", "qty": 2})
    replies = await asyncio.gather(*(warm.hgetall("order:7") for _ in range(5)), warm.hgetall(b"order:7"))
    assert replies == [{b"who": b"ann", b"qty": b"2"}] * 6
    assert len({id(reply) for reply in replies}) == 6  # each caller its own dict
    assert server_calls(sync_redis, "hgetall") == 1
    assert warm.coalesced == 5


async def test_a_write_to_the_key_in_between_is_not_reordered(warm: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    sync_redis.set("k", "old")
    before, written, after, again = await asyncio.gather(
        warm.get("k"), warm.set("k", "new"), warm.get("k"), warm.get("k")
    )
    assert (before, written, after, again) == (b"old", True, b"new", b"new")
    assert server_calls(sync_redis, "get") == 2  # the two after the write share one


async def test_a_write_to_another_key_leaves_sharing_alone(warm: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    sync_redis.set("a", "1")
    replies = await asyncio.gather(warm.get("a"), warm.incr("b"), warm.sadd("s", "x"), warm.get("a"))
    assert replies == [b"1", 1, 1, b"1"]
    assert server_calls(sync_redis, "get") == 1


@pytest.mark.parametrize(
    "barrier",
    [
        lambda r: r.delete("other"),
        lambda r: r.eval("return redis.call('SET', KEYS[1], 'lua')", 1, "a"),
        lambda r: r.mset({"a": "mset"}),
        lambda r: r.execute_command("RENAME", "x", "a"),
    ],
    ids=["del", "eval", "mset", "unknown-to-the-table"],
)
async def test_a_command_with_keys_it_cannot_tell_ends_all_sharing(
    warm: AutoPipelineRedis, sync_redis: redis.Redis, barrier: Op
) -> None:
    sync_redis.mset({"a": "1", "x": "renamed"})
    first, _, second = await asyncio.gather(warm.get("a"), barrier(warm), warm.get("a"))
    assert first == b"1"
    assert server_calls(sync_redis, "get") == 2
    assert second == sync_redis.get("a")  # whatever the barrier made of it, seen in order


async def test_reads_differing_in_anything_are_not_shared(warm: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    sync_redis.hset("h", mapping={"a": 1, "b": 2})
    replies = await asyncio.gather(
        warm.hget("h", "a"), warm.hget("h", "b"), warm.hmget("h", ["a"]), warm.hrandfield("h"), warm.hrandfield("h")
    )
    assert replies[:3] == [b"1", b"2", [b"1"]]
    assert server_calls(sync_redis, "hget") == 2
    assert server_calls(sync_redis, "hrandfield") == 2  # random: each caller its own draw
    assert warm.coalesced == 0


async def test_reads_in_separate_batches_are_not_shared(warm: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    assert await warm.get("k") is None
    sync_redis.set("k", "v")  # another client's write between two batches is seen
    assert await warm.get("k") == b"v"
    assert server_calls(sync_redis, "get") == 2


async def test_shared_list_replies_are_copies(warm: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    sync_redis.rpush("l", "a", "b")
    sync_redis.xadd("st", {"f": "v"}, id="1-1")
    one, two = await asyncio.gather(warm.lrange("l", 0, -1), warm.lrange("l", 0, -1))
    one.append(b"mine")
    assert two == [b"a", b"b"]
    raw_one, raw_two = await asyncio.gather(
        warm.execute_command("XRANGE", "st", "-", "+"), warm.execute_command("XRANGE", "st", "-", "+")
    )
    assert raw_one == raw_two and raw_one[0][1] is not raw_two[0][1]  # nested lists copied too
    assert server_calls(sync_redis, "lrange") == 1


async def test_a_shared_error_is_raised_as_its_own_instance(warm: AutoPipelineRedis, sync_redis: redis.Redis) -> None:
    sync_redis.set("str", "x")
    errors = await asyncio.gather(*(warm.hgetall("str") for _ in range(3)), return_exceptions=True)
    assert all(isinstance(e, redis.ResponseError) and "WRONGTYPE" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == 3
    assert server_calls(sync_redis, "hgetall") == 1


async def test_a_cancelled_first_caller_still_answers_the_others(
    warm: AutoPipelineRedis, sync_redis: redis.Redis
) -> None:
    sync_redis.set("k", "v")
    first = asyncio.create_task(warm.get("k"))
    others = [asyncio.create_task(warm.get("k")) for _ in range(3)]
    await asyncio.sleep(0)  # all four queued in one batch; the first leads
    first.cancel()
    assert await asyncio.gather(*others) == [b"v"] * 3
    assert warm.coalesced == 3


@pytest.mark.fault
async def test_connection_loss_fails_every_caller_sharing_a_written_read(own_redis_server: RedisServer) -> None:
    client = autopipeline_client(own_redis_server.url, max_connections=2)
    try:
        assert await client.ping() is True
        own_redis_server.pause()
        readers = [asyncio.create_task(client.get("k")) for _ in range(4)]
        await eventually(lambda: written(client) == 1, what="the shared read written")  # no reply comes
        own_redis_server.kill()
        results = await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 10)
        assert all(isinstance(result, redis.ConnectionError) for result in results), results
        assert client.coalesced == 3
    finally:
        own_redis_server.resume() if own_redis_server.process else None
        await client.aclose()


# -- pipeline(transaction=False) on the lane ------------------------------------------------------


async def test_a_plain_pipeline_rides_the_lane_with_redis_asyncio_replies(
    warm: AutoPipelineRedis, redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    plain = aioredis.Redis.from_url(redis_server.url)
    try:
        results = []
        for client in (plain, warm):
            sync_redis.flushall()
            sync_redis.set("str", "x")
            async with client.pipeline(transaction=False) as pipe:
                pipe.sadd("s", "a").hincrbyfloat("h", "f", 1.5).hincrby("h", "n", 2).hgetall("h").smembers("s")
                pipe.hgetall("str").zadd("z", {"m": 1}).zrange("z", 0, -1, withscores=True)
                replies = await pipe.execute(raise_on_error=False)
            results.append([repr(r) if isinstance(r, Exception) else r for r in replies])
    finally:
        await plain.aclose()
    assert results[1] == results[0]
    assert results[1][3] == {b"f": b"1.5", b"n": b"2"} and results[1][4] == {b"a"}
    # No pooled connection was taken: only the lane and the two test clients are connected.
    assert sync_redis.info("clients")["connected_clients"] == 2


async def test_a_plain_pipeline_raises_the_first_error_as_redis_asyncio_does(warm: AutoPipelineRedis) -> None:
    await warm.set("str", "x")
    pipe = warm.pipeline(transaction=False)
    pipe.incr("n").hgetall("str").incr("n")
    with pytest.raises(redis.ResponseError, match=r"Command # 2 \(HGETALL str\) of pipeline caused error"):
        await pipe.execute()
    assert await warm.get("n") == b"2"  # the others ran, in order
    assert pipe.command_stack == []  # reset, reusable


async def test_a_plain_pipeline_that_cannot_be_encoded_sends_nothing(
    warm: AutoPipelineRedis, redis_server: RedisServer, sync_redis: redis.Redis
) -> None:
    # As in redis.asyncio, which packs a whole pipeline before writing any of it.
    plain = aioredis.Redis.from_url(redis_server.url)
    try:
        for client in (plain, warm):
            pipe = client.pipeline(transaction=False)
            pipe.incr("n").set("k", {"not": "encodable"}).incr("n")  # type: ignore[arg-type]
            with pytest.raises(redis.DataError):
                await pipe.execute()
            assert sync_redis.get("n") is None
            assert pipe.command_stack == []
    finally:
        await plain.aclose()


async def test_a_plain_pipeline_keeps_its_order_against_reads_sharing(
    warm: AutoPipelineRedis, sync_redis: redis.Redis
) -> None:
    sync_redis.set("k", "old")
    pipe = warm.pipeline(transaction=False)
    pipe.get("k").set("k", "new").get("k")
    replies, alone = await asyncio.gather(pipe.execute(), warm.get("k"))
    assert replies == [b"old", True, b"new"]
    assert alone == b"new"  # queued after the pipeline's write: shares its last read, never the first


async def test_pipelines_that_need_a_connection_of_their_own_still_get_one(warm: AutoPipelineRedis) -> None:
    pipe = warm.pipeline(transaction=False)
    pipe.rpush("q", "job").blpop(["q"], timeout=1).incr("n")
    assert await pipe.execute() == [1, (b"q", b"job"), 1]
    async with warm.pipeline(transaction=False) as watched:
        await watched.watch("n")
        watched.multi()
        watched.incr("n")
        assert await watched.execute() == [2]
