"""The runtime: connect, run hooks, subscribe, dispatch, and shut down gracefully.

Where a message goes: socket -> hiredis (a backend's subscriber) -> :class:`Dispatcher.consume`
(one dict lookup) -> each subscribed handler's :class:`HandlerWorker` inbox -> its loop -> the
handler. The runner picks each worker's parts (:func:`ordering_for`, :func:`settlement_for`, and
the reply part that settles requests, :func:`replies_for`).

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
from collections.abc import Iterator, Sequence
from contextlib import AsyncExitStack, contextmanager
from dataclasses import replace
from types import TracebackType
from typing import Any

from eventbus._backends import MEMORY_URL, command_client, open_backend, resolve_url, transport
from eventbus._backends.base import Backend, Source, Subscriber, SubscriberSource, client_publish
from eventbus._backends.memory import MemoryBroker
from eventbus._batch import BatchCollector
from eventbus._channels import Channel
from eventbus._context import UNKNOWN_SERVER, Context, ServerInfo
from eventbus._deadletter import DeadLetterStore, resolve_max_bytes
from eventbus._dispatch import Dispatcher, deliver_payloads
from eventbus._errors import ConfigError
from eventbus._flow import ReadGate
from eventbus._health import Probes
from eventbus._heartbeat import INTERVAL as HEARTBEAT_INTERVAL
from eventbus._heartbeat import Heartbeat
from eventbus._history import RedisHistory
from eventbus._hotpath import FELL_BACK as hot_path_fell_back
from eventbus._hotpath import describe as describe_hot_path
from eventbus._keyed import KeyedOrdering, key_function
from eventbus._lag import LagCollector, LagMonitor
from eventbus._logs import configure as configure_logging
from eventbus._loops import describe_loop
from eventbus._loops import run as run_on_loop
from eventbus._metrics import MetricsServer, StatsCollector
from eventbus._names import encode_name
from eventbus._parts import Ordering, Settlement
from eventbus._publisher import Publisher
from eventbus._recovery import CHANNEL, PATTERN, SHARDED, Recovery
from eventbus._replies import ReplySender, finish_replies
from eventbus._requests import LazyRequester, Requester
from eventbus._resume import PositionKeeper, Resumer, ResumeSettlement, identity_for
from eventbus._router import Handler, Router, load_target, stream_group
from eventbus._settings import DEFAULT_MAX_CONNECTIONS, ConnectionSettings, Settings, settings_from
from eventbus._stats import BusStats, HandlerStats, RequestStats
from eventbus._stream_options import StreamOptions
from eventbus._streams import StreamConsumer, StreamSettlement
from eventbus._tasks import cancel_and_wait
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


def listen_for_gaps(subscriber: Subscriber, recovery: Recovery, kinds: tuple[int, ...]) -> None:
    """Have ``subscriber`` tell ``recovery`` when its connection is lost, and when it has
    resubscribed after the gap."""
    lost = getattr(subscriber, "lost_listeners", None)
    if lost is not None:
        lost.append(lambda reason: recovery.connection_lost(kinds))
    listeners = getattr(subscriber, "resubscribed", None)
    if listeners is not None:
        listeners.append(lambda: recovery.resubscribed(kinds))


def reads_streams(handler: Handler) -> bool:
    return any(s.kind == "stream" for s in handler.subscriptions)


def ordering_for(handler: Handler) -> Ordering | None:
    """Batch handlers collect batches (per key lane with a key); keyed handlers keep the order per
    key; the others share one FIFO inbox (no part)."""
    batch = handler.options.batch
    if batch is not None:
        return BatchCollector(handler, batch, key_function(handler) if handler.options.key is not None else None)
    return KeyedOrdering(handler) if handler.options.key is not None else None


def settlement_for(handler: Handler) -> Settlement | None:
    """Stream handlers acknowledge what they read; pub/sub handlers have nothing to settle."""
    return StreamSettlement(handler.name) if reads_streams(handler) else None


def keepers_for(handler: Handler) -> dict[str, PositionKeeper]:
    """A resumed handler's position keepers, one per recoverable channel it subscribes to."""
    if not handler.options.resume:
        return {}
    identity = identity_for(handler.name)
    return {
        sub.name: PositionKeeper(handler.name, identity, sub.name, _ttl_ms(sub.declared))
        for sub in handler.subscriptions
        if sub.declared is not None and sub.recoverable
    }


def _ttl_ms(channel: Channel | None) -> int:
    # The positions outlive the history by nothing: after the history's TTL they mean nothing.
    return 0 if channel is None or channel.ttl is None else max(1, int(channel.ttl * 1000))


def replies_for(handler: Handler, ctx: Context, settlement: Settlement | None) -> Settlement:
    """Every handler answers requests: its return value is published as the reply, then the
    request settles as ``settlement`` says (the worker uses this part for requests only)."""
    return ReplySender(ctx, handler.name, settlement)


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
        # Set by any worker that becomes idle: drain() checks them all again then.
        self._became_idle = asyncio.Event()
        # overflow="pause": a handler over its inbox budget stops every subscription connection.
        self.read_gate = ReadGate()
        self.connection = replace(settings.connection, gate=self.read_gate)
        self.backend: Backend | None = None
        self.redis: Any = None
        self.publisher: Publisher | None = None
        self.requester: Requester | None = None  # requests from handlers: its reply channel is subscribed
        self._reply_channel_added = False  # at the first request
        self._adding_reply_channel = asyncio.Lock()
        # What messages are read from, in start order: pub/sub, sharded, each stream consumer.
        self.sources: list[Source] = []
        self.subscriber: Subscriber | None = None  # the pub/sub one
        self.sharded: Subscriber | None = None
        self.consumers: list[StreamConsumer] = []
        self.recovery: Recovery | None = None  # recoverable channels' positions (made with the workers)
        self._teardown: AsyncExitStack | None = None  # what start() acquired, for stop() to undo
        self._stop_requested: asyncio.Event | None = None
        self._signals = 0
        self._starting: asyncio.Task[None] | None = None
        # Seconds between heartbeats in Redis (eventbus._heartbeat); None: none (the benchmarks' baseline).
        self.heartbeat_interval: float | None = HEARTBEAT_INTERVAL

    @property
    def embedded(self) -> Any:
        """The embedded Redis started for this run, if any."""
        return getattr(self.backend, "embedded", None)

    # -- starting -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect, run the startup hooks, start the workers and subscribe; returns when subscribed.

        A start that fails half-way (a subscription refused by an ACL, a key that is not a stream)
        undoes what it had done, in reverse, the way :meth:`stop` does, and raises; the shutdown
        hooks run if every startup hook had.
        """
        # Each step pushes its undoing onto one stack as soon as it has acquired something; stop()
        # and a failed start unwind that stack (docs/architecture.md, "Lifecycle"):
        #   step                                  undone by (bottom up)
        #   open the backend, the dead letters    close them (ctx.redis, an embedded Redis)
        #   serve /metrics and the probes         stop serving
        #   run the startup hooks                 run the shutdown hooks
        #   (for the sources, all at once)        close them: the last stream acknowledgements
        #   start one worker per handler          finish queued work within the grace period, stop
        #   start each source                     stop reading from it
        #   report lag and stats periodically     stop reporting
        self._stop_requested = asyncio.Event()
        stack = AsyncExitStack()
        try:
            await self._connect(stack)
            self._serve_metrics(stack)
            base = self._context()
            await self._run_startup_hooks(stack, base)
            # The sources close once the workers have stopped (their last stream acknowledgements):
            # that step goes on the stack below the workers, for the sources started after them.
            stack.push_async_callback(self._close_sources)
            dispatcher = self._start_workers(stack, base)
            await self._subscribe(stack, dispatcher)
            self._report_periodically(stack)
            self._beat(stack)
        except BaseException:
            # Undone through the same stack as a stop, without the grace period (nothing ran yet);
            # the error that stopped the start is the one to raise, not one met while undoing it.
            self.stopping.set()
            try:
                await stack.aclose()
            except Exception:
                log.warning("undoing the failed start failed", exc_info=True)
            raise
        self._teardown = stack
        self._log_started()
        self.ready.set()

    async def _connect(self, stack: AsyncExitStack) -> None:
        s = self.settings
        self.backend = backend = await open_backend(s.url, self.connection, source=s.url_source, broker=self.broker)
        stack.push_async_callback(self._close_backend)
        self.url = backend.url
        self.server = ServerInfo(
            url=redact_url(backend.url), source=backend.source, explicit=backend.explicit, owned=backend.owned
        )
        self.redis = backend.redis
        self.publisher = Publisher(backend.publish, backend.redis, history=backend.history)
        # Requests from handlers (ctx.request) get their replies on this process's subscription
        # connection: the reply channel is subscribed with the handlers' channels.
        self.requester = Requester(
            self.publisher.send,
            self.stats.requests,
            counts_receivers=getattr(backend, "counts_receivers", True),
            connected=self._subscribed,
            wait_connected=self._wait_subscribed,
        )
        self.publisher.requester = self.requester
        self.dead_letters = DeadLetterStore(
            self.redis, s.dead_letter_stream, max_bytes=self.dead_letter_max_bytes, stats=self.stats
        )
        stack.callback(self.dead_letters.close)  # before the client closes: a pending size check

    def _serve_metrics(self, stack: AsyncExitStack) -> None:
        s = self.settings
        if s.metrics_port is None:
            return
        # Before the startup hooks: a taken port fails the start before the application did anything.
        probes = Probes(asyncio.get_running_loop(), self.readiness, s.health_deadline)
        self.metrics = MetricsServer(self._collector(), s.metrics_port, s.metrics_addr, probes)
        stack.push_async_callback(self._close_metrics)
        log.info("Prometheus metrics at %s (probes: /healthz, /readyz)", self.metrics.url)

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

    async def _run_startup_hooks(self, stack: AsyncExitStack, base: Context) -> None:
        for hook in self.router.startup:
            await _call_hook(hook, base)
            log.debug("startup hook %s done", getattr(hook, "__qualname__", hook))
        # Once every startup hook has run, the shutdown hooks are owed, whatever fails next. (A
        # startup hook that fails is the application's error: the hooks are not pairs, so none runs.)
        stack.push_async_callback(self._run_shutdown_hooks, base)
        dead_letters = self.dead_letters
        assert dead_letters is not None
        self.dead_letter_stream = dead_letters.stream  # a startup hook may have chosen the app's own
        for problem in await dead_letters.probe():
            # Failures would be counted as dead_letter_failed and lost: say so before the first one.
            log.warning("%s", problem)

    def _start_workers(self, stack: AsyncExitStack, base: Context) -> Dispatcher:
        """One worker per handler, and the dispatcher that routes into their inboxes."""
        dead_letters = self.dead_letters
        assert dead_letters is not None
        backend = self.backend
        assert backend is not None
        self.recovery = Recovery(backend.history, self.stats, self.settings.max_payload, deliver_payloads)
        self.recovery.on_idle = self._became_idle.set
        dispatcher = Dispatcher(self.stats, self.settings.max_payload, self.recovery)
        by_name: dict[str, HandlerWorker] = {}
        for handler in self.router.handlers:
            if self.middleware:
                handler = replace(handler, middleware=(*self.middleware, *handler.middleware))
            stats = self.stats.handlers.setdefault(
                handler.name, HandlerStats(batching=handler.options.batch is not None)
            )
            context = base.for_handler(handler.name)
            ordering, settlement = ordering_for(handler), settlement_for(handler)
            keepers = keepers_for(handler)
            if keepers:
                settlement = ResumeSettlement(keepers, settlement)
            replies = replies_for(handler, context, settlement)
            worker = HandlerWorker(handler, context, stats, dead_letters, self.read_gate, ordering, settlement, replies)
            worker.on_idle = self._became_idle.set
            worker.on_drop = self.recovery.dropped  # a recoverable channel reads its drops back
            by_name[handler.name] = worker
            self.workers.append(worker)
        dispatcher.add_routes((sub, by_name[h.name]) for sub, h in self.router.routes())
        resumer = self.recovery.resumer = Resumer(backend.history)
        for sub, handler in self.router.routes():
            settlement = by_name[handler.name].settlement
            if isinstance(settlement, ResumeSettlement) and sub.name in settlement.keepers:
                keeper = settlement.keepers[sub.name]
                self.recovery.resume(sub.kind, sub.name, by_name[handler.name], keeper)
                resumer.keepers.append(keeper)
        # Unwound after the drain below: the clean save of each position comes once the handlers
        # have settled what they will.
        stack.push_async_callback(resumer.close)
        if self.requester is not None:
            dispatcher.replies[encode_name(self.requester.reply_to)] = self.requester.deliver
        stack.push_async_callback(self._finish_work)
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
        return dispatcher

    async def _subscribe(self, stack: AsyncExitStack, dispatcher: Dispatcher) -> None:
        """Start the sources in order: pub/sub, then sharded channels and stream consumer groups,
        which have connections of their own."""
        backend = self.backend
        assert backend is not None
        self.subscriber = backend.subscriber(self.stats)
        router = self.router
        channels, patterns = router.channels(), router.patterns()
        recovery = dispatcher.recovery
        if recovery is not None:
            # After the sources stop reading and before the drain: recoveries under way end.
            stack.push_async_callback(recovery.close)
            listen_for_gaps(self.subscriber, recovery, (CHANNEL, PATTERN))
        if self.requester is not None:
            listeners = getattr(self.subscriber, "lost_listeners", None)
            if listeners is not None:
                listeners.append(self.requester.connection_lost)
        await self._start_source(stack, SubscriberSource(self.subscriber, dispatcher.consume, channels, patterns))
        sharded = router.sharded_channels()
        if sharded:
            self.sharded = backend.sharded_subscriber(self.stats)
            if recovery is not None:
                listen_for_gaps(self.sharded, recovery, (SHARDED,))
            await self._start_source(stack, SubscriberSource(self.sharded, dispatcher.consume, sharded, ()))
        if recovery is not None:
            await recovery.start()  # subscribed: recoverable channels read their position now
            if recovery.resumer is not None:
                recovery.resumer.start()
        workers = {worker.name: worker for worker in self.workers}
        for subscription, handler in router.stream_routes():
            worker = workers[handler.name]
            options = subscription.stream or StreamOptions()
            group = stream_group(subscription, handler)
            consumer = StreamConsumer(subscription.name, group, options, worker, self.redis, backend.stream_client())
            self.consumers.append(consumer)
            await self._start_source(stack, consumer)

    def _subscribed(self) -> bool:
        return self._reply_channel_added and self.subscriber is not None and self.subscriber.is_connected()

    async def _wait_subscribed(self) -> None:
        """Until the reply channel is subscribed (the caller's timeout bounds the wait).

        The reply channel is added to the subscription connection at the first request, not at
        start: a runner whose handlers never ask subscribes nothing more (nor needs the ACL for it).
        """
        while self.subscriber is None or not self.subscriber.is_connected():
            connected = getattr(self.subscriber, "connected", None)
            if isinstance(connected, asyncio.Event):
                await connected.wait()
            else:
                await asyncio.sleep(0.05)  # not subscribed yet (a startup hook asking)
        if self._reply_channel_added:
            return
        assert self.requester is not None
        async with self._adding_reply_channel:
            if not self._reply_channel_added:
                add_channels = getattr(self.subscriber, "add_channels", None)
                if add_channels is None:
                    raise ConfigError(f"{type(self.subscriber).__name__} cannot subscribe a reply channel")
                await add_channels([self.requester.reply_to])
                self._reply_channel_added = True
        await self._wait_subscribed()  # it may have been lost meanwhile

    async def _start_source(self, stack: AsyncExitStack, source: Source) -> None:
        # Its undoing first: a source whose start fails half-way (connected, then refused) is
        # stopped and closed like the others.
        self.sources.append(source)
        stack.push_async_callback(self._stop_reading, source)
        await source.start()

    def _report_periodically(self, stack: AsyncExitStack) -> None:
        if self.consumers:
            self.lag = LagMonitor(self.redis, [(c.stream, c.group, c.options.max_deliveries) for c in self.consumers])
            if self.metrics is not None:
                self.metrics.registry.register(LagCollector(self.lag, asyncio.get_running_loop()))
        interval = self.settings.stats_interval
        if interval:
            task = asyncio.create_task(self._log_stats(interval), name="eventbus:stats")
            stack.push_async_callback(cancel_and_wait, [task])

    def _beat(self, stack: AsyncExitStack) -> None:
        """Say in Redis, every few seconds, who this process is and how its handlers are doing."""
        if self.heartbeat_interval is None or self.broker is not None or self.settings.url == MEMORY_URL:
            return  # in memory, no dashboard can see it
        heartbeat = Heartbeat(
            self.redis,
            self.router.name,
            self.workers,
            self.stats,
            self.read_gate,
            dead_letter_stream=lambda: self.dead_letter_stream,
            connected=lambda: self.subscriber is not None and self.subscriber.is_connected(),
            interval=self.heartbeat_interval,
        )
        heartbeat.start()
        stack.push_async_callback(heartbeat.stop)

    async def _log_stats(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            streams = await self.lag.summary() if self.lag is not None else ""
            log.info("stats: %s%s", summarize(self.stats), f" {streams}" if streams else "")

    def _log_started(self) -> None:
        if self.consumers:
            log.info(
                "%s: consuming %d stream(s) as %s: %s",
                self.router.name,
                len(self.consumers),
                self.consumers[0].name,
                ", ".join(f"{c.stream!r} (group {c.group!r})" for c in self.consumers),
            )
        log.info(
            "%s: %d handler(s) subscribed to %d channel(s) and %d pattern(s) on one connection to %s (event loop: %s)",
            self.router.name,
            len(self.workers),
            len(self.router.channels()),
            len(self.router.patterns()),
            redact_url(self.url or ""),
            describe_loop(),
        )
        if hot_path_fell_back:
            log.warning(
                "hot path: %s; eventbus works the same, more slowly. Install a C "
                "compiler and reinstall eventbus to compile it, or set EVENTBUS_PURE_PYTHON=1 to choose "
                "this path and silence this line",
                describe_hot_path(),
            )
        else:
            log.debug("hot path: %s", describe_hot_path())

    # -- running ------------------------------------------------------------------------------

    async def serve(self, *, handle_signals: bool = True) -> None:
        """Start, run until :meth:`request_stop` (or SIGINT/SIGTERM/SIGHUP), then stop gracefully."""
        # Installed before starting: a signal while Redis is still being retried (up to
        # --connect-timeout) cancels the start, which undoes itself (embedded server included).
        # Still installed while draining, so that a second signal can cut the drain short.
        with self._signals_handled(stop_signals() if handle_signals else ()):
            self._starting = asyncio.create_task(self.start(), name="eventbus:start")
            try:
                await self._starting
            except asyncio.CancelledError:
                if self._signals == 0:
                    raise
                log.info("stopped before the start completed")
                return
            try:
                assert self._stop_requested is not None
                await self._stop_requested.wait()
            finally:
                await self.stop()

    @contextmanager
    def _signals_handled(self, signals: Sequence[signal.Signals]) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in signals:
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            yield
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

    def readiness(self) -> list[str]:
        """Why this runner is not ready to take messages; empty when it is (what ``/readyz`` says).

        Started and not stopping, then whatever each source reports (a connection down and
        reconnecting, a stream group not reading).
        """
        if self.stopping.is_set():
            return ["stopping"]
        if not self.ready.is_set():
            return ["starting"]
        return [problem for source in self.sources for problem in source.problems()]

    def idle(self) -> bool:
        recovering = self.recovery is not None and self.recovery.busy()
        return not recovering and all(worker.idle for worker in self.workers)

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until every inbox is empty and no handler is running; False if ``timeout`` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        went_idle = self._became_idle
        while True:
            went_idle.clear()  # before looking: a worker going idle after the look sets it again
            if self.idle():
                return True
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            try:
                await asyncio.wait_for(went_idle.wait(), left)
            except TimeoutError:
                return self.idle()

    # -- stopping -----------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop reading, let queued work finish within the grace period, then close everything.

        Undoes what :meth:`start` did, in reverse: every source stops reading; the workers finish
        their queued work within the grace period and what is left is reported as abandoned; the
        sources close (the last stream acknowledgements); the shutdown hooks run; the metrics
        server, the dead letters and the backend close. A runner that is not started has nothing
        to stop.
        """
        stack, self._teardown = self._teardown, None
        if stack is None:
            return
        self.stopping.set()
        try:
            await stack.aclose()
        finally:
            log.info("summary: %s", summarize(self.stats))

    async def _stop_reading(self, source: Source) -> None:
        # Before the grace drain: no new messages or entries from this source.
        try:
            await source.stop_reading()
        except Exception:
            log.warning("stopping %r failed", source, exc_info=True)

    async def _finish_work(self) -> None:
        """Reading stopped: queued work finishes within the grace period, then the workers end.

        Only a runner that started waits and reports: a failed start has its error to raise.
        """
        started = self.ready.is_set()
        drained = started and await self.drain(self.grace)
        abandoned = 0
        for worker in self.workers:
            abandoned += await worker.stop()
        unsent = await finish_replies(1.0)  # the replies of the last requests, before the client closes
        if unsent:
            log.warning("stopped: %d reply(ies) could not be published in time", unsent)
        if not started:
            return
        if drained:
            log.info("stopped: all queued work finished")
        else:
            log.warning(
                "stopped: the %.1fs grace period ran out; %d queued or in-flight message(s) abandoned",
                self.grace,
                abandoned,
            )

    async def _close_sources(self) -> None:
        """After the workers stopped: the last stream acknowledgements, before the client closes."""
        results = await asyncio.gather(*(source.close() for source in self.sources), return_exceptions=True)
        for source, result in zip(self.sources, results, strict=True):
            if isinstance(result, Exception):
                log.warning("closing %r failed", source, exc_info=result)

    async def _run_shutdown_hooks(self, base: Context) -> None:
        for hook in self.router.shutdown:
            # One failing hook must not skip the others, nor the closing that follows (connections,
            # an embedded redis-server child).
            try:
                await _call_hook(hook, base)
            except Exception:
                log.exception("shutdown hook %s failed", getattr(hook, "__qualname__", hook))

    async def _close_metrics(self) -> None:
        metrics, self.metrics = self.metrics, None
        if metrics is not None:
            await asyncio.to_thread(metrics.close)

    async def _close_backend(self) -> None:
        backend, self.backend = self.backend, None
        self.redis = None
        if backend is not None:
            await backend.aclose()

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
    resolved = resolve_url(url, SOURCE_CODE).url
    client = command_client(resolved, max_connections=max_connections, autopipeline=autopipeline)
    inboxes: list[ReplyInbox] = []

    async def open_inbox(requester: Requester) -> ReplyInbox:
        inbox = await ReplyInbox.open(resolved, requester)
        inboxes.append(inbox)
        return inbox

    async def close() -> None:
        # Requests still waiting would otherwise wait for their timeout: their replies cannot come.
        requester.connection_lost("the publisher was closed")
        for inbox in inboxes:
            await inbox.aclose()
        await client.aclose()

    publisher = Publisher(client_publish(client), client, close, history=RedisHistory(client))
    requester = LazyRequester(publisher.send, RequestStats(), open_inbox)
    publisher.requester = requester
    return publisher


class ReplyInbox:
    """The reply subscription of a producer (``eventbus.connect()``), opened at its first request.

    One subscription connection, subscribed to the requester's reply channel only, kept alive
    (reconnect, resubscribe) as a runner's is; its command client is never used.
    """

    def __init__(self, backend: Backend, subscriber: Subscriber) -> None:
        self.backend = backend
        self.subscriber = subscriber

    @classmethod
    async def open(cls, url: str, requester: Requester) -> ReplyInbox:
        settings = ConnectionSettings()
        backend = await transport(url).open_backend(
            url, settings, source=SOURCE_CODE, explicit=True, timeout=settings.connect_timeout, quiet=True
        )
        requester.counts_receivers = getattr(backend, "counts_receivers", True)
        subscriber = backend.subscriber(BusStats())
        dispatcher = Dispatcher(BusStats())
        dispatcher.replies[encode_name(requester.reply_to)] = requester.deliver
        listeners = getattr(subscriber, "lost_listeners", None)
        if listeners is not None:
            listeners.append(requester.connection_lost)
        try:
            await subscriber.start(dispatcher.consume, [requester.reply_to], [])
        except BaseException:
            await backend.aclose()
            raise
        return cls(backend, subscriber)

    def is_connected(self) -> bool:
        return self.subscriber.is_connected()

    async def wait_connected(self) -> None:
        while not self.subscriber.is_connected():
            connected = getattr(self.subscriber, "connected", None)
            if isinstance(connected, asyncio.Event):
                await connected.wait()
            else:
                await asyncio.sleep(0.05)

    async def aclose(self) -> None:
        await self.subscriber.stop()
        await self.backend.aclose()
