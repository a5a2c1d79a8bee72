"""Liveness and readiness on the metrics port: ``/healthz``, ``/readyz`` beside ``/metrics``.

Both probes are answered by the HTTP server's thread, but the facts they report belong to the
event loop, so the thread asks the loop (``call_soon_threadsafe``) and waits at most ``deadline``:

- ``/healthz`` (liveness): the loop ran a callback within the deadline. A handler that blocks the
  loop (``time.sleep`` in an ``async def``, a CPU-bound loop) fails it with 503, which is what an
  orchestrator should restart.
- ``/readyz`` (readiness): the reasons a ``readiness`` function gives, evaluated on the loop (so
  a blocked loop is not ready either). The runner's (``Runner.readiness``): it finished starting
  and is not stopping, and each of its sources reports no problem: the subscription connection is
  up with every subscription confirmed, every sharded node is subscribed, every stream consumer
  group is reading. During a reconnect gap it answers 503 (the connection is down and
  resubscribing), and 200 again once the subscriptions are confirmed.

Status codes are Kubernetes-style (200 healthy/ready, 503 not) with a short JSON body saying why.
Any other path goes to the Prometheus exposition app (``/metrics``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from eventbus._errors import ConfigError, EventbusError
from eventbus._settings import DEFAULT_HEALTH_DEADLINE

log = logging.getLogger("eventbus.health")

T = TypeVar("T")


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class LoopUnresponsive(Exception):
    """The event loop did not run the probe's callback in time (or is closed)."""


def call_on_loop(loop: asyncio.AbstractEventLoop, fn: Callable[[], T], deadline: float) -> T:
    """Run ``fn`` on ``loop`` from another thread and return its result within ``deadline`` seconds."""
    future: concurrent.futures.Future[T] = concurrent.futures.Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return  # the prober gave up already: a blocked loop catching up runs nothing
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            future.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError:
        raise LoopUnresponsive("the event loop is closed") from None
    try:
        return future.result(deadline)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise LoopUnresponsive(f"the event loop did not answer within {deadline:g}s (a handler blocking it?)") from None


class Probes:
    """The two probes of one runner: what ``/healthz`` and ``/readyz`` answer."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        readiness: Callable[[], list[str]],
        deadline: float = DEFAULT_HEALTH_DEADLINE,
    ) -> None:
        if deadline <= 0:
            raise ConfigError(f"the health deadline must be > 0 seconds, got {deadline!r}")
        self.loop = loop
        self.readiness = readiness  # runs on the loop; returns why not ready (empty: ready)
        self.deadline = deadline

    def healthz(self) -> tuple[int, dict[str, Any]]:
        started = time.monotonic()
        try:
            call_on_loop(self.loop, lambda: None, self.deadline)
        except LoopUnresponsive as exc:
            return 503, {"status": "unhealthy", "reason": str(exc)}
        return 200, {"status": "ok", "loop_delay_ms": round((time.monotonic() - started) * 1000, 2)}

    def readyz(self) -> tuple[int, dict[str, Any]]:
        try:
            reasons = call_on_loop(self.loop, self.readiness, self.deadline)
        except LoopUnresponsive as exc:
            return 503, {"status": "not ready", "reasons": [str(exc)]}
        except Exception as exc:  # a probe answers; the error is the reason
            log.exception("readiness check failed")
            return 503, {"status": "not ready", "reasons": [f"readiness check failed: {type(exc).__name__}"]}
        if reasons:
            return 503, {"status": "not ready", "reasons": reasons}
        return 200, {"status": "ready"}


def probe_app(metrics: WSGIApp, probes: Probes | None) -> WSGIApp:
    """``/healthz`` and ``/readyz`` from ``probes``; every other path to the metrics app."""
    routes: dict[str, Callable[[], tuple[int, dict[str, Any]]]] = {}
    if probes is not None:
        routes = {"/healthz": probes.healthz, "/readyz": probes.readyz}

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        probe = routes.get(environ.get("PATH_INFO", ""))
        if probe is None:
            return metrics(environ, start_response)
        code, body = probe()
        payload = json.dumps(body).encode() + b"\n"
        reason = "OK" if code == 200 else "Service Unavailable"
        start_response(
            f"{code} {reason}",
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                ("Cache-Control", "no-store"),
            ],
        )
        return [payload]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a probe every few seconds is not news; stderr is the application's log


def serve(
    registry: CollectorRegistry, probes: Probes | None, port: int, addr: str
) -> tuple[WSGIServer, threading.Thread]:
    """prometheus-client's threaded WSGI server (a daemon thread), with the probes routed in front."""
    app = probe_app(make_wsgi_app(registry), probes)
    try:
        server = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            # Something else holds the port now (often another runner given the same port): a
            # runtime conflict, exit 1, not a usage error; the same command works once it is free.
            raise EventbusError(
                f"cannot serve metrics on {addr}:{port}: port {port} is already in use by another process "
                "(another runner? give each its own port, or 0 for a free one)"
            ) from None
        # An address that is not local, a privileged port: a setting to fix.
        raise ConfigError(f"cannot serve metrics on {addr}:{port}: {exc.strerror or exc}") from None
    thread = threading.Thread(target=server.serve_forever, name="eventbus:metrics", daemon=True)
    thread.start()
    return server, thread
