from __future__ import annotations

import asyncio

import pytest

from eventbus import Context, Message, Runner, on
from eventbus.backends.embedded import EmbeddedRedis
from tests.redis_server import port_open


@pytest.mark.parametrize("kind", ["redis-server", "fakeredis"])
async def test_embedded_server_runs_handlers_and_stops(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if kind == "fakeredis":
        # A machine without the redis-server binary falls back to fakeredis's TCP server.
        monkeypatch.setattr("eventbus.backends.embedded.shutil.which", lambda name: None)
    embedded = EmbeddedRedis().start()
    assert embedded.kind == kind
    got: list[bytes] = []

    @on("ping")
    async def record(msg: Message, ctx: Context) -> None:
        got.append(msg.data)
        await ctx.redis.incr("n")

    try:
        async with Runner([record], url=embedded.url) as runner:
            assert await runner.publisher.publish("ping", "1") == 1  # type: ignore[union-attr]
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.01)
            assert await runner.drain(5)
            assert await runner.redis.get("n") == b"1"
    finally:
        embedded.stop()
    assert got == [b"1"]
    assert not port_open(embedded.port)  # stopped with the run


async def test_runner_falls_back_to_embedded_when_default_is_down(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.redis_server import free_port

    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    monkeypatch.setenv("EVENTBUS_DEFAULT_URL", f"redis://127.0.0.1:{free_port()}/0")

    @on("x")
    async def noop(msg: Message, ctx: Context) -> None: ...

    runner = Runner([noop])
    async with runner:
        assert runner.embedded is not None
        embedded = runner.embedded
        assert runner.url == embedded.url
    assert runner.embedded is None
    assert not port_open(embedded.port)  # stopped with the run


async def test_no_embedded_means_a_bounded_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from eventbus import ConnectError
    from tests.redis_server import free_port

    monkeypatch.delenv("EVENTBUS_URL", raising=False)
    monkeypatch.setenv("EVENTBUS_DEFAULT_URL", f"redis://127.0.0.1:{free_port()}/0")

    @on("x")
    async def noop(msg: Message, ctx: Context) -> None: ...

    with pytest.raises(ConnectError, match="did not answer within"):
        async with Runner([noop], embedded=False, connect_timeout=0.5):
            pass
