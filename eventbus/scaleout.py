"""What the runner starts besides its pub/sub connection: sharded subscriptions and stream consumers.

Kept out of :mod:`eventbus.runner` so the runner only calls :meth:`ScaleOut.start`,
:meth:`ScaleOut.stop_reading` (before its grace drain) and :meth:`ScaleOut.close` (after it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from eventbus.cluster import ShardedSubscriber, is_cluster_url, parse_cluster_url
from eventbus.config import redact_url
from eventbus.errors import ConfigError
from eventbus.memory_backend import MemorySubscriber
from eventbus.redis_backend import Feed, command_client
from eventbus.router import Handler, stream_group
from eventbus.stream_options import StreamOptions
from eventbus.streams import StreamConsumer, StreamWorker
from eventbus.worker import HandlerWorker

if TYPE_CHECKING:
    from eventbus.runner import Runner

log = logging.getLogger("eventbus")


def reads_streams(handler: Handler) -> bool:
    return any(s.kind == "stream" for s in handler.subscriptions)


def worker_class(handler: Handler) -> type[HandlerWorker]:
    """Stream handlers get the worker that acknowledges; the others the plain one."""
    return StreamWorker if reads_streams(handler) else HandlerWorker


class ScaleOut:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.sharded: ShardedSubscriber | MemorySubscriber | None = None
        self.consumers: list[StreamConsumer] = []

    async def start(self, feed: Feed, workers: dict[str, HandlerWorker]) -> None:
        runner = self.runner
        channels = runner.router.sharded_channels()
        if channels:
            await self._start_sharded(feed, channels)
        for subscription, handler in runner.router.stream_routes():
            worker = workers[handler.name]
            assert isinstance(worker, StreamWorker)
            options = subscription.stream or StreamOptions()
            reader = (
                runner.broker.client()
                if runner.broker is not None
                else command_client(runner.url or "", max_connections=2)
            )
            consumer = StreamConsumer(
                subscription.name, stream_group(subscription, handler), options, worker, runner.redis, reader
            )
            await consumer.start()
            self.consumers.append(consumer)
        if self.consumers:
            log.info(
                "%s: consuming %d stream(s) as %s: %s",
                runner.router.name,
                len(self.consumers),
                self.consumers[0].name,
                ", ".join(f"{c.stream!r} (group {c.group!r})" for c in self.consumers),
            )

    async def _start_sharded(self, feed: Feed, channels: list[str]) -> None:
        runner = self.runner
        if runner.broker is not None:
            # In memory, sharded channels are one more namespace of the same broker.
            memory = MemorySubscriber(runner.broker, gate=runner.read_gate)
            await memory.start(feed, [], [], sharded=channels)
            self.sharded = memory
            return
        if runner.url is None:
            raise ConfigError("sharded channels (@on(..., sharded=True)) need a Redis URL")
        options: dict[str, Any] = {
            "ping_interval": runner.ping_interval,
            "ping_timeout": runner.ping_timeout,
            "reconnect_max_delay": runner.reconnect_max_delay,
            "gate": runner.read_gate,
        }
        if is_cluster_url(runner.url):
            parsed = parse_cluster_url(runner.url)
            self.sharded = ShardedSubscriber(parsed.node_urls(), runner.stats, node_url=parsed.node_url, **options)
        else:
            self.sharded = ShardedSubscriber([runner.url], runner.stats, **options)
        await self.sharded.start(feed, channels)
        log.info(
            "%s: subscribed to %d sharded channel(s) on %d node(s) of %s",
            runner.router.name,
            len(channels),
            len(self.sharded.nodes),
            redact_url(runner.url),
        )

    async def stop_reading(self) -> None:
        """Before the grace drain: no new messages or entries."""
        if self.sharded is not None:
            await self.sharded.stop()
        await asyncio.gather(*(c.stop_reading() for c in self.consumers))

    async def close(self) -> None:
        """After the drain: send the last acknowledgements and leave the groups."""
        await asyncio.gather(*(c.close() for c in self.consumers))
