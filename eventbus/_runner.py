"""The runtime: connect, run hooks, subscribe, dispatch, and shut down gracefully.

Where a message goes: socket -> hiredis (a backend's subscriber) -> :class:`Dispatcher.consume`
(one dict lookup) -> each subscribed handler's :class:`HandlerWorker` inbox -> the handler.

The runner owns the lifecycle around that path. It opens a backend (:func:`open_backend`, the one
place a URL picks a transport) and holds a list of *sources* that share start / stop_reading /
close: the pub/sub subscription, the sharded one, and one consumer per stream.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from dataclasses import replace
from types import TracebackType
from typing import Any

from eventbus._backends import MEMORY_URL, command_client, open_backend, resolve_url
from eventbus._backends.base import Backend, Source, Subscriber, SubscriberSource, client_publish
from eventbus._backends.memory import MemoryBroker
from eventbus._context import UNKNOWN_SERVER, Context, ServerInfo
from eventbus._deadletter import DeadLetterStore, resolve_max_bytes
from eventbus._dispatch import Dispatcher
from eventbus._flow import ReadGate
from eventbus._health import runner_probes
from eventbus._hotpath import FELL_BACK as hot_path_fell_back
from eventbus._hotpath import describe as describe_hot_path
from eventbus._lag import LagCollector, LagMonitor, runner_groups
from eventbus._logs import configure as configure_logging
from eventbus._loops import describe_loop
from eventbus._loops import run as run_on_loop
from eventbus._metrics import MetricsServer, StatsCollector
from eventbus._publisher import Publisher
from eventbus._router import Handler, Router, load_target, stream_group
from eventbus._settings import DEFAULT_MAX_CONNECTIONS, Settings, settings_from
from eventbus._stats import BusStats, HandlerStats
from eventbus._stream_options import StreamOptions
from eventbus._streams import StreamConsumer, StreamWorker
from eventbus._urls import SOURCE_CODE, redact_url
from eventbus._worker import HandlerWorker
from eventbus.middleware import check_chain

log = logging.getLogger("eventbus")


def stop_signals() -> tuple[signal.Signals, ...]:
    """The signals that stop a run gracefully: SIGINT, SIGTERM and SIGHUP.

    SIGHUP is a closed terminal or a dropped ssh session: its default action would kill the process
    with no drain, no shutdown hooks, and an embedded Redis left behind. Unless it is ignored when
    we start (``nohup``): then the user asked to outlive the terminal, and it stays ignored.
    """
    hangup = () if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN else (signal.SIGHUP,)
    return (signal.SIGINT, signal.SIGTERM, *hangup)


def reads_streams(handler: Handler) -> bool:
    return any(s.kind == "stream" for s in handler.subscriptions)


def worker_class(handler: Handler) -> type[HandlerWorker]:
    """Stream handlers get the worker that acknowledges; the others the plain one."""
    return StreamWorker if reads_streams(handler) else HandlerWorker


class Runner:
    """Runs the handlers of one application on one subscription connection.

    ``target``: a module, ``"pkg.mod[:attr]"``, a Router, or a list of handlers.
    ``settings``: a :class:`Settings` record; keyword options (``url=``, ``grace=``,
    ``ping_interval=``, ...) override its fields. ``broker``: run in memory instead (tests).
    ``middleware``: async functions ``(msg, ctx, call_next)`` around every handler, outermost first,
    outside the module's and the handlers' own (see :mod:`eventbus.middleware`).
    """

    def __init__(
        self, target: Any, settings: Settings | None = None, *, broker: MemoryBroker | None = None, **options: Any
    ) -> None:
        self.settings = settings = settings_from(settings, **options)
        if settings.url and settings.url != MEMORY_URL and broker is None:
            resolve_url(settings.url, settings.url_source)  # a malformed URL fails here, before start()
        if settings.log_level is not None:
            configure_logging(settings.log_level)  # first: loading the target may already log
        self.router: Router = load_target(target)
        # Global middleware: around every handler, outside the module's and the handler's own.
        self.middleware = check_chain(settings.middleware, "Runner")
        self.broker = broker
        self.grace = settings.grace
        self.dead_letter_stream = settings.dead_letter_stream
        self.dead_letter_max_bytes = resolve_max_bytes(settings.dead_letter_max_bytes)  # a bad value fails here
        self.dead_letters: DeadLetterStore | None = None  # made on connecting; hooks may change its stream
        self.metrics: MetricsServer | None = None
        self.lag: LagMonitor | None = None  # consumer-group figures, when there are stream consumers
        self.stats = BusStats()
        self.state: dict[str, Any] = {}
        self.url: str | None = None
        self.server: ServerInfo = UNKNOWN_SERVER  # set on connecting; given to every Context
        self.ready = asyncio.Event()
        self.stopping = asyncio.Event()  # shared with every Context: set when reading stops
        self.workers: list[HandlerWorker] = []
        # overflow="pause": a handler over its inbox budget stops every subscription connection.
        self.read_gate = ReadGate()
        self.connection = replace(settings.connection, gate=self.read_gate)
        self.backend: Backend | None = None
        self.redis: Any = None
        self.publisher: Publisher | None = None
        # What messages are read from, in start order: pub/sub, sharded, each stream consumer.
        self.sources: list[Source] = []
        self.subscriber: Subscriber | None = None  # the pub/sub one
        self.sharded: Subscriber | None = None
        self.consumers: list[StreamConsumer] = []
        self._stop_requested: asyncio.Event | None = None
        self._signals = 0
        self._starting: asyncio.Task[None] | None = None
        self._background: list[asyncio.Task[None]] = []
        self._started = False

    @property
    def embedded(self) -> Any:
        """The embedded Redis started for this run, if any."""
        return getattr(self.backend, "embedded", None)

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
        await self._stop_reading(quiet=True)
        await self._close_sources(quiet=True)
        for worker in self.workers:
            await worker.stop()
        await self._close_backend()

    async def _connect(self) -> None:
        s = self.settings
        self.backend = backend = await open_backend(s.url, self.connection, source=s.url_source, broker=self.broker)
        self.url = backend.url
        self.server = ServerInfo(
            url=redact_url(backend.url), source=backend.source, explicit=backend.explicit, owned=backend.owned
        )
        self.redis = backend.redis
        self.publisher = Publisher(backend.publish, backend.redis)
        self.dead_letters = DeadLetterStore(
            self.redis, s.dead_letter_stream, max_bytes=self.dead_letter_max_bytes, stats=self.stats
        )

    def _collector(self) -> StatsCollector:
        workers = self.workers
        return StatsCollector(
            self.stats,
            inbox_depths=lambda: {w.name: len(w.inbox) for w in list(workers)},
            inbox_bytes=lambda: {w.name: w.queued_bytes for w in list(workers)},
            connected=lambda: self.subscriber is not None and self.subscriber.is_connected(),
            reading_paused=lambda: self.read_gate.paused,
        )

    def _context(self) -> Context:
        assert self.publisher is not None
        return Context(
            redis=self.redis,
            publisher=self.publisher,
            state=self.state,
            stats=self.stats,
            stopping=self.stopping,
            server=self.server,
            dead_letters=self.dead_letters,
        )

    async def _start_app(self) -> None:
        assert self.publisher is not None and self.backend is not None
        s = self.settings
        if s.metrics_port is not None:
            # Before anything subscribes: a taken port fails the start with nothing to undo.
            probes = runner_probes(self, s.health_deadline)
            self.metrics = MetricsServer(self._collector(), s.metrics_port, s.metrics_addr, probes)
            log.info("Prometheus metrics at %s (probes: /healthz, /readyz)", self.metrics.url)
        base = self._context()
        for hook in self.router.startup:
            await _call_hook(hook, base)
            log.debug("startup hook %s done", getattr(hook, "__qualname__", hook))
        dead_letters = self.dead_letters
        assert dead_letters is not None
        self.dead_letter_stream = dead_letters.stream  # a startup hook may have chosen the app's own
        for problem in await dead_letters.probe():
            # Failures would be counted as dead_letter_failed and lost: say so before the first one.
            log.warning("%s", problem)
        dispatcher = Dispatcher(self.stats, s.max_payload)
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
        self.subscriber = self.backend.subscriber(self.stats)
        await self._add_source(SubscriberSource(self.subscriber, dispatcher.consume, channels, patterns))
        # Sharded channels and stream consumer groups have connections of their own.
        sharded = self.router.sharded_channels()
        if sharded:
            self.sharded = self.backend.sharded_subscriber(self.stats)
            await self._add_source(SubscriberSource(self.sharded, dispatcher.consume, sharded, ()))
        for subscription, handler in self.router.stream_routes():
            worker = by_name[handler.name]
            assert isinstance(worker, StreamWorker)
            consumer = StreamConsumer(
                subscription.name,
                stream_group(subscription, handler),
                subscription.stream or StreamOptions(),
                worker,
                self.redis,
                self.backend.stream_client(),
            )
            self.consumers.append(consumer)
            await self._add_source(consumer)
        if self.consumers:
            log.info(
                "%s: consuming %d stream(s) as %s: %s",
                self.router.name,
                len(self.consumers),
                self.consumers[0].name,
                ", ".join(f"{c.stream!r} (group {c.group!r})" for c in self.consumers),
            )
        groups = runner_groups(self)
        if groups:
            self.lag = LagMonitor(self.redis, groups)
            if self.metrics is not None:
                self.metrics.registry.register(LagCollector(self.lag, asyncio.get_running_loop()))
        log.info(
            "%s: %d handler(s) subscribed to %d channel(s) and %d pattern(s) on one connection to %s (event loop: %s)",
            self.router.name,
            len(self.workers),
            len(channels),
            len(patterns),
            redact_url(self.url or ""),
            describe_loop(),
        )
        if hot_path_fell_back:
            log.warning(
                "hot path: %s; eventbus works the same, at about half the drain throughput. Install a C "
                "compiler and reinstall eventbus to compile it, or set EVENTBUS_PURE_PYTHON=1 to choose "
                "this path and silence this line",
                describe_hot_path(),
            )
        else:
            log.debug("hot path: %s", describe_hot_path())
        if s.stats_interval:
            self._background.append(asyncio.create_task(self._report_periodically(s.stats_interval)))
        self.ready.set()

    async def _add_source(self, source: Source) -> None:
        # Listed before starting: a start that fails half-way is still stopped by _undo_start.
        self.sources.append(source)
        await source.start()

    async def _stop_reading(self, *, quiet: bool = False) -> None:
        """Before the grace drain: no new messages or entries from any source.

        One after the other, in start order (pub/sub, sharded, streams), as before sources were
        a list: the subscription connections close before the stream readers are cancelled.
        """
        for source in self.sources:
            try:
                await source.stop_reading()
            except Exception:
                if not quiet:
                    raise
                log.debug("stopping %r failed", source, exc_info=True)

    async def _close_sources(self, *, quiet: bool = False) -> None:
        """After the drain: the last stream acknowledgements, before the client closes."""
        await asyncio.gather(*(s.close() for s in self.sources), return_exceptions=quiet)

    # -- running ------------------------------------------------------------------------------

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Start, run until :meth:`request_stop` (or SIGINT/SIGTERM/SIGHUP), then stop gracefully."""
        loop = asyncio.get_running_loop()
        signals = stop_signals() if handle_signals else ()
        # Installed before starting: a signal while Redis is still being retried (up to
        # --connect-timeout) cancels the start, which undoes itself (embedded server included).
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        self._starting = asyncio.create_task(self.start(), name="eventbus:start")
        try:
            await self._starting
        except asyncio.CancelledError:
            if self._signals == 0:
                raise
            log.info("stopped before the start completed")
            for sig in signals:
                loop.remove_signal_handler(sig)
            return
        except BaseException:
            for sig in signals:
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
                for sig in signals:
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
        if self.backend is not None:
            self.backend.kill()
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
        await self._stop_reading()
        drained = await self.drain(self.grace)
        abandoned = 0
        for worker in self.workers:
            abandoned += await worker.stop()
        await self._close_sources()  # last stream acks: after the drain, before the client closes
        if drained:
            log.info("stopped: all queued work finished")
        else:
            log.warning(
                "stopped: the %.1fs grace period ran out; %d queued or in-flight message(s) abandoned",
                self.grace,
                abandoned,
            )
        if self.publisher is not None:
            base = self._context()
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
        if self.dead_letters is not None:
            self.dead_letters.close()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
            self.metrics = None
        if self.backend is not None:
            backend, self.backend = self.backend, None
            self.redis = None
            await backend.aclose()

    async def _report_periodically(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            streams = await self.lag.summary() if self.lag is not None else ""
            log.info("stats: %s%s", summarize(self.stats), f" {streams}" if streams else "")

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
    if stats.dead_letters_trimmed:
        parts.append(f"dead_letters_trimmed={stats.dead_letters_trimmed}")
    if stats.reconnects:
        parts.append(f"reconnects={stats.reconnects} gap={stats.gap_seconds:.1f}s")
    if stats.output_buffer_closes:
        parts.append(f"output_buffer_closes={stats.output_buffer_closes}")
    return " ".join(parts)


def run(target: Any, *, loop: str = "auto", **options: Any) -> None:
    """Run ``target``'s handlers until SIGINT/SIGTERM/SIGHUP (blocking); options as for :class:`Runner`.

    ``loop``: the event loop to create, as ``--loop``: ``"auto"`` (uvloop when it is installed),
    ``"asyncio"`` or ``"uvloop"``. Already inside a loop, use ``async with Runner(...)`` (or
    ``await Runner(...).serve()`` to run until a signal): this raises a RuntimeError that says so.
    """
    if _loop_running():
        # Checked before anything is built: asyncio.run's own error would come with an un-awaited
        # coroutine warning and no word about what to use instead.
        raise RuntimeError(
            "eventbus.run() cannot be called inside a running event loop (it starts its own): "
            "use `async with Runner(...)` instead, or `await Runner(...).serve()` to run until SIGINT/SIGTERM"
        )
    run_on_loop(Runner(target, **options).serve(), loop)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def connect(
    url: str | None = None, *, max_connections: int = DEFAULT_MAX_CONNECTIONS, autopipeline: bool | None = None
) -> Publisher:
    """A publisher on Redis at ``url`` (default: $EVENTBUS_URL, else redis://localhost:6379/0).

    Use it as an async context manager so its connections are closed. ``autopipeline=False``
    makes ``bus.redis`` a plain ``redis.asyncio.Redis`` (None: unless $EVENTBUS_AUTOPIPELINE is 0).
    """
    client = command_client(
        resolve_url(url, SOURCE_CODE).url, max_connections=max_connections, autopipeline=autopipeline
    )
    return Publisher(client_publish(client), client, client.aclose)
