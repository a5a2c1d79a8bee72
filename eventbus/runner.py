"""The runtime: connect, run hooks, subscribe, dispatch, and shut down gracefully.

Where a message goes: socket -> hiredis (backend's subscriber) -> :class:`Dispatcher` (one dict
lookup) -> each subscribed handler's :class:`HandlerWorker` inbox -> the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import replace
from types import TracebackType
from typing import Any, Protocol

from eventbus.cluster import pubsub_subscriber
from eventbus.config import SOURCE_CODE, redact_url, resolve_url
from eventbus.context import UNKNOWN_SERVER, Context, ServerInfo
from eventbus.deadletter import DEFAULT_STREAM, DeadLetterStore
from eventbus.dispatch import Dispatcher
from eventbus.embedded import EmbeddedRedis
from eventbus.errors import ConnectError
from eventbus.flow import ReadGate
from eventbus.logs import configure as configure_logging
from eventbus.loops import describe_loop
from eventbus.loops import run as run_on_loop
from eventbus.memory_backend import MemoryBroker, MemorySubscriber
from eventbus.metrics import MetricsServer, runner_collector
from eventbus.middleware import check_chain
from eventbus.publisher import Publisher
from eventbus.redis_backend import Feed, command_client, wait_until_reachable
from eventbus.router import Router, load_target
from eventbus.scaleout import ScaleOut, worker_class
from eventbus.stats import BusStats, HandlerStats
from eventbus.worker import HandlerWorker

log = logging.getLogger("eventbus")

DEFAULT_MAX_PAYLOAD = 1024 * 1024


class Subscriber(Protocol):
    """What the runner needs from a backend's subscription side."""

    async def start(self, feed: Feed, channels: list[str], patterns: list[str]) -> None: ...
    async def stop(self) -> None: ...


class Runner:
    """Runs the handlers of one application on one subscription connection.

    ``target``: a module, ``"pkg.mod[:attr]"``, a Router, or a list of handlers.
    ``url``: Redis URL; None means $EVENTBUS_URL, else redis://localhost:6379/0 with an embedded
    Redis started if nothing answers there. ``broker``: run in memory instead (tests).
    ``url_source``: where ``url`` came from, as the log names it ("code" unless the CLI says "--url").
    ``log_level``: set up logging like the CLI at this level when the application has not configured
    logging itself (see :func:`eventbus.logs.configure`); None leaves logging alone.
    ``middleware``: async functions ``(msg, ctx, call_next)`` around every handler, outermost first,
    outside the module's and the handlers' own (see :mod:`eventbus.middleware`).
    """

    def __init__(
        self,
        target: Any,
        *,
        url: str | None = None,
        broker: MemoryBroker | None = None,
        grace: float = 10.0,
        connect_timeout: float = 15.0,
        max_payload: int | None = DEFAULT_MAX_PAYLOAD,
        max_connections: int = 64,
        dead_letter_stream: str = DEFAULT_STREAM,
        stats_interval: float | None = None,
        ping_interval: float = 5.0,
        ping_timeout: float = 5.0,
        reconnect_max_delay: float = 5.0,
        metrics_port: int | None = None,
        metrics_addr: str = "0.0.0.0",
        embedded: bool = True,
        url_source: str = SOURCE_CODE,
        log_level: str | None = "info",
        middleware: Sequence[Any] = (),
    ) -> None:
        if log_level is not None:
            configure_logging(log_level)  # first: loading the target may already log
        self.router: Router = load_target(target)
        # Global middleware: around every handler, outside the module's and the handler's own.
        self.middleware = check_chain(middleware, "Runner")
        self.requested_url = url
        self.url_source = url_source
        self.broker = broker
        self.grace = grace
        self.connect_timeout = connect_timeout
        self.max_payload = max_payload
        self.max_connections = max_connections
        self.dead_letter_stream = dead_letter_stream
        self.stats_interval = stats_interval
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.reconnect_max_delay = reconnect_max_delay
        self.metrics_port = metrics_port
        self.metrics_addr = metrics_addr
        self.metrics: MetricsServer | None = None
        self.allow_embedded = embedded
        self.stats = BusStats()
        self.state: dict[str, Any] = {}
        self.url: str | None = None
        self.embedded: EmbeddedRedis | None = None
        self.server: ServerInfo = UNKNOWN_SERVER  # set on connecting; given to every Context
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()  # shared with every Context: set when reading stops
        self.workers: list[HandlerWorker] = []
        # overflow="pause": a handler over its inbox budget stops every subscription connection.
        self.read_gate = ReadGate()
        self.scaleout: ScaleOut | None = None
        self.redis: Any = None
        self.publisher: Publisher | None = None
        self._subscriber: Subscriber | None = None
        self._stop_requested: asyncio.Event | None = None
        self._signals = 0
        self._starting: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._started = False

    # -- starting -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, run startup hooks, start the workers and subscribe. Returns when subscribed."""
        self._stop_requested = asyncio.Event()
        self._started = True
        try:
            await self._connect()
            await self._start_app()
        except BaseException:
            self._started = False
            await self._undo_start()
            raise

    async def _undo_start(self) -> None:
        # What _start_app had running when it failed (a subscription refused, a stream consumer
        # that cannot start): a subscription connection with its reconnecting supervisor, stream
        # readers and worker tasks must not outlive the failed start.
        if self._subscriber is not None:
            with contextlib.suppress(Exception):
                await self._subscriber.stop()
        if self.scaleout is not None:
            with contextlib.suppress(Exception):
                await self.scaleout.stop_reading()
                await self.scaleout.close()
        for worker in self.workers:
            await worker.stop()
        await self._close_backend()

    async def _connect(self) -> None:
        if self.broker is not None:
            self.redis = self.broker.client()
            self.publisher = Publisher(self.broker.apublish, self.redis)
            self._subscriber = MemorySubscriber(self.broker, gate=self.read_gate)
            self.url = "memory://"
            self.server = ServerInfo(url=self.url, source="memory", explicit=False, owned=True)
            return
        self.url = await self._reachable_url()
        self.server = self._server_info(self.url)
        self.redis = command_client(self.url, max_connections=self.max_connections)
        client = self.redis

        async def publish(channel: str, payload: bytes) -> int:
            return int(await client.publish(channel, payload))

        self.publisher = Publisher(publish, client)
        self._subscriber = pubsub_subscriber(
            self.url,
            self.stats,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            reconnect_max_delay=self.reconnect_max_delay,
            gate=self.read_gate,
        )

    async def _reachable_url(self) -> str:
        resolved = resolve_url(self.requested_url, self.url_source)
        if resolved.explicit or not self.allow_embedded:
            log.info("connecting to Redis at %s (from %s)", redact_url(resolved.url), resolved.source)
            await wait_until_reachable(resolved.url, self.connect_timeout)
            return resolved.url
        log.debug("nothing configured: trying %s (from %s) for 0.3s", redact_url(resolved.url), resolved.source)
        try:
            await wait_until_reachable(resolved.url, 0.3, quiet=True)
            log.info(
                "using Redis at %s (from %s; set --url or EVENTBUS_URL to change)",
                redact_url(resolved.url),
                resolved.source,
            )
            return resolved.url
        except ConnectError as exc:
            log.debug("no Redis at the default URL: %s", exc)
        self.embedded = await asyncio.to_thread(EmbeddedRedis().start)
        log.warning(
            "no Redis at %s and none configured: started an embedded %s at %s for this run. "
            "Publish to it from another shell with: EVENTBUS_URL=%s python -m eventbus publish CHANNEL DATA",
            resolved.url,
            self.embedded.kind,
            self.embedded.url,
            self.embedded.url,
        )
        return self.embedded.url

    def _server_info(self, url: str) -> ServerInfo:
        if self.embedded is not None:
            return ServerInfo(url=redact_url(url), source="embedded", explicit=False, owned=True)
        resolved = resolve_url(self.requested_url)
        return ServerInfo(url=redact_url(url), source=resolved.source, explicit=resolved.explicit, owned=False)

    async def _start_app(self) -> None:
        assert self.publisher is not None and self._subscriber is not None
        if self.metrics_port is not None:
            # Before anything subscribes: a taken port fails the start with nothing to undo.
            self.metrics = MetricsServer(runner_collector(self), self.metrics_port, self.metrics_addr)
            log.info("Prometheus metrics at %s", self.metrics.url)
        base = Context(
            redis=self.redis,
            publisher=self.publisher,
            state=self.state,
            stats=self.stats,
            stopping=self.stopping,
            server=self.server,
        )
        for hook in self.router.startup:
            await _call_hook(hook, base)
            log.debug("startup hook %s done", getattr(hook, "__qualname__", hook))
        dead_letters = DeadLetterStore(self.redis, self.dead_letter_stream)
        dispatcher = Dispatcher(self.stats, self.max_payload)
        by_name: dict[str, HandlerWorker] = {}
        for handler in self.router.handlers:
            if self.middleware:
                handler = replace(handler, middleware=(*self.middleware, *handler.middleware))
            stats = self.stats.handlers.setdefault(handler.name, HandlerStats())
            worker = worker_class(handler)(handler, base.for_handler(handler.name), stats, dead_letters, self.read_gate)
            by_name[handler.name] = worker
            self.workers.append(worker)
        dispatcher.add_routes((sub, by_name[h.name]) for sub, h in self.router.routes())
        for worker in self.workers:
            worker.start()
            o = worker.handler.options
            log.debug(
                "handler %s: concurrency=%d inbox=%s overflow=%s retries=%d backoff=%gs",
                worker.name,
                o.concurrency,
                o.inbox_limits,
                o.overflow,
                o.retries,
                o.backoff,
            )
        channels, patterns = self.router.channels(), self.router.patterns()
        await self._subscriber.start(dispatcher.feed, channels, patterns)
        # Sharded channels and stream consumer groups have connections of their own.
        self.scaleout = ScaleOut(self)
        await self.scaleout.start(dispatcher.feed, by_name)
        log.info(
            "%s: %d handler(s) subscribed to %d channel(s) and %d pattern(s) on one connection to %s (event loop: %s)",
            self.router.name,
            len(self.workers),
            len(channels),
            len(patterns),
            redact_url(self.url or ""),
            describe_loop(),
        )
        if self.stats_interval:
            self._background.append(asyncio.create_task(self._report_periodically(self.stats_interval)))
        self.ready.set()

    # -- running ------------------------------------------------------------------------------

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Start, run until :meth:`request_stop` (or SIGINT/SIGTERM), then stop gracefully."""
        loop = asyncio.get_running_loop()
        if handle_signals:
            # Installed before starting: a signal while Redis is still being retried (up to
            # --connect-timeout) cancels the start, which undoes itself (embedded server included).
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._on_signal, sig)
        self._starting = asyncio.create_task(self.start(), name="eventbus:start")
        try:
            await self._starting
        except asyncio.CancelledError:
            if self._signals == 0:
                raise
            log.info("stopped before the start completed")
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            return
        except BaseException:
            if handle_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            raise
        try:
            assert self._stop_requested is not None
            await self._stop_requested.wait()
        finally:
            # Handlers stay installed while draining, so a second signal can still cut it short.
            try:
                await self.stop()
            finally:
                if handle_signals:
                    for sig in (signal.SIGINT, signal.SIGTERM):
                        loop.remove_signal_handler(sig)

    def request_stop(self) -> None:
        if self._stop_requested is not None:
            self._stop_requested.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1 and self._starting is not None and not self._starting.done():
            log.info("%s received while starting: cancelling the start", sig.name)
            self._starting.cancel()
            return
        if self._signals == 1:
            log.info(
                "%s received: stopping; finishing queued work for up to %.1fs (send again to exit at once)",
                sig.name,
                self.grace,
            )
            self.request_stop()
            return
        pending = sum(len(w.inbox) + w.in_flight for w in self.workers)
        log.warning("%s received again: exiting now, abandoning %d message(s)", sig.name, pending)
        if self.embedded is not None:
            self.embedded.stop()
        logging.shutdown()
        os._exit(130)

    def idle(self) -> bool:
        return all(worker.idle for worker in self.workers)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every inbox is empty and no handler is running; False if ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.idle():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.002)
        return True

    # -- stopping -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop reading, let queued work finish within the grace period, then close everything."""
        if not self._started:
            return
        self._started = False
        self.stopping.set()
        for task in self._background:
            task.cancel()
        if self._subscriber is not None:
            await self._subscriber.stop()
        if self.scaleout is not None:
            await self.scaleout.stop_reading()
        drained = await self.drain(self.grace)
        abandoned = 0
        for worker in self.workers:
            abandoned += await worker.stop()
        if self.scaleout is not None:
            await self.scaleout.close()  # last stream acks: after the drain, before the client closes
        if drained:
            log.info("stopped: all queued work finished")
        else:
            log.warning(
                "stopped: the %.1fs grace period ran out; %d queued or in-flight message(s) abandoned",
                self.grace,
                abandoned,
            )
        if self.publisher is not None:
            base = Context(
                redis=self.redis,
                publisher=self.publisher,
                state=self.state,
                stats=self.stats,
                stopping=self.stopping,
                server=self.server,
            )
            for hook in self.router.shutdown:
                # One failing hook must not skip the others, nor the closing below (connections,
                # an embedded redis-server child).
                try:
                    await _call_hook(hook, base)
                except Exception:
                    log.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))
        log.info("summary: %s", summarize(self.stats))
        await self._close_backend()

    async def _close_backend(self) -> None:
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
            self.metrics = None
        if self.redis is not None:
            with contextlib.suppress(Exception):
                await self.redis.aclose()
            self.redis = None
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.stop)
            self.embedded = None

    async def _report_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            log.info("stats: %s", summarize(self.stats))

    async def __aenter__(self) -> Runner:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()


async def _call_hook(hook: Any, ctx: Context) -> None:
    result = hook(ctx)
    if asyncio.iscoroutine(result):
        await result


def summarize(stats: BusStats) -> str:
    """One log line: totals over handlers, then the reconnect figures."""
    totals: dict[str, float] = {}
    for handler_stats in stats.handlers.values():
        for key, value in handler_stats.as_dict().items():
            if key != "latency_total":
                totals[key] = totals.get(key, 0) + value
    parts = [f"messages={stats.messages}"] + [f"{k}={int(v)}" for k, v in totals.items()]
    if stats.oversized:
        parts.append(f"oversized={stats.oversized}")
    if stats.reconnects:
        parts.append(f"reconnects={stats.reconnects} gap={stats.gap_seconds:.1f}s")
    return " ".join(parts)


def run(target: Any, *, loop: str = "auto", **options: Any) -> None:
    """Run ``target``'s handlers until SIGINT/SIGTERM (blocking); options as for :class:`Runner`.

    ``loop``: the event loop to create, as ``--loop``: ``"auto"`` (uvloop when it is installed),
    ``"asyncio"`` or ``"uvloop"``. Already inside a loop, use ``await Runner(...).serve()``.
    """
    run_on_loop(Runner(target, **options).serve(), loop)
