"""Recoverable channels through every fault at once, against real processes: a publisher at about
1,000 messages/s while the subscription connection is killed, Redis is frozen past the ping
deadline, the subscriber process is stopped past a small output-buffer limit, the subscriber is
restarted cleanly (SIGTERM) and killed (SIGKILL), and Redis is restarted with its data (AOF) and
without it (a new epoch). For the recoverable channel: nothing is lost except what was reported as
not recovered, nothing is delivered twice except after the SIGKILL (what was handled after the last
saved position), and the order is kept.

One round of the faults by default (~15 s); ``EVENTBUS_FAULT_SECONDS=60`` repeats them for a minute.
The subscriber runs with ``--ping-interval 0.5 --ping-timeout 0.5`` so that a freeze is noticed in
a second instead of ten (the defaults: the same path, only slower).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from eventbus import Channel, connect
from tests.cli_process import EventbusProcess
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.fault]

STEADY = Channel("steady", history=100_000)


@pytest.fixture
def persistent_redis() -> Iterator[RedisServer]:
    server = RedisServer(extra_args=["--appendonly", "yes", "--appendfsync", "always"]).start()
    yield server
    server.stop()


class Publisher:
    """Publishes 1, 2, 3, ... at about 1,000/s in a thread of its own; a number counts once its
    publish returned (one that failed while Redis was down is published again)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.top = 0
        self.running = False
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while self.running:
            try:
                async with connect(self.url) as bus:
                    while self.running:
                        await bus.publish(STEADY, self.top + 1)
                        self.top += 1
                        if self.top % 10 == 0:
                            await asyncio.sleep(0.01)
            except (redis.RedisError, OSError):
                await asyncio.sleep(0.05)

    def start(self) -> None:
        self.running = True
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self.running = False
        if self._task is not None:
            await self._task


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_a_steady_publisher_through_every_fault(
    persistent_redis: RedisServer, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    server = persistent_redis
    record = tmp_path / "record.txt"
    record.touch()
    env = {**subprocess_env, "STEADY_RECORD": str(record)}
    args = ["run", "tests.sample_apps.steady", "--url", server.url, "--ping-interval", "0.5", "--ping-timeout", "0.5"]
    processes: list[EventbusProcess] = []
    crashes: list[tuple[int, int]] = []  # (what had been published, what had been recorded) at each SIGKILL

    def start() -> EventbusProcess:
        proc = EventbusProcess(args, env)
        processes.append(proc)
        proc.wait_for("subscribed to 1 channel")
        return proc

    def recorded() -> list[int]:
        return [int(line) for line in record.read_text().split()]

    def admin() -> redis.Redis:
        return server.client()

    publisher = Publisher(server.url)
    proc = start()
    publisher.start()
    seconds = float(os.environ.get("EVENTBUS_FAULT_SECONDS", "0"))
    deadline = time.monotonic() + seconds
    rounds = 0
    try:
        while rounds == 0 or time.monotonic() < deadline:
            rounds += 1

            async def progress(step: str) -> None:
                mark = publisher.top
                await until(
                    lambda: len(set(recorded())) > mark + 200 and publisher.top > mark + 200, f"progress ({step})"
                )

            await progress("start")
            with admin() as client:  # 1. the subscription connection killed
                client.client_kill_filter(_type="pubsub")
            await progress("after CLIENT KILL")
            server.pause()  # 2. Redis frozen past the ping deadline
            await until(lambda p=proc: "lost (no answer to PING" in p.output[-5000:], "the freeze noticed")  # type: ignore[misc]
            server.resume()
            await progress("after the freeze")
            with admin() as client:  # 3. the subscriber stopped past a small output-buffer limit
                client.config_set("client-output-buffer-limit", "pubsub 64kb 0 0")
            proc.signal(signal.SIGSTOP)
            mark = publisher.top
            await until(lambda m=mark: publisher.top > m + 1500, "a backlog past the limit")  # type: ignore[misc]
            proc.signal(signal.SIGCONT)
            with admin() as client:
                client.config_set("client-output-buffer-limit", "pubsub 32mb 8mb 60")
            await progress("after the output-buffer drop")
            proc.signal(signal.SIGTERM)  # 4. a clean restart
            assert proc.wait() == 0
            proc = start()
            await progress("after the clean restart")
            proc.process.kill()  # 5. a crash
            proc.wait()
            crashes.append((publisher.top, len(recorded())))
            await asyncio.sleep(0.3)  # published while it is down
            proc = start()
            await progress("after the crash")
            await publisher.stop()  # 6. Redis restarted with its data...
            await until(lambda: set(recorded()) >= set(range(1, publisher.top + 1)), "everything so far")
            server.restart()
            publisher.start()
            await progress("after a Redis restart with its data")
            await publisher.stop()  # 7. ...and without it: a new epoch
            await until(lambda: set(recorded()) >= set(range(1, publisher.top + 1)), "everything so far")
            server.kill()
            shutil.rmtree(Path(server.dir) / "appendonlydir", ignore_errors=True)
            server.start()
            publisher.start()
            await progress("after a Redis restart without its data")
        await publisher.stop()
        total = publisher.top
        await until(lambda: set(recorded()) >= set(range(1, total + 1)), "everything")
        proc.signal(signal.SIGTERM)
        assert proc.wait() == 0
    finally:
        publisher.running = False
        for each in processes:
            each.kill()
    numbers = recorded()
    output = "".join(each.output for each in processes)
    assert "NOT recovered" not in output.replace("NOT recovered: messages on 'steady' published after offset", "")
    assert set(numbers) == set(range(1, total + 1))  # nothing lost
    first_seen = list(dict.fromkeys(numbers))
    assert first_seen == list(range(1, total + 1))  # in publish order
    repeats = len(numbers) - len(first_seen)
    # Only the crashes repeat: what was handled after the last saved position (0.2 s of traffic).
    assert repeats <= 400 * len(crashes), repeats
    # The restart without data was reported.
    assert "history was lost" in output, [line for line in output.splitlines() if "recover" in line.lower()]
