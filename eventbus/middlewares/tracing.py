"""OpenTelemetry tracing: a span per handler attempt, and trace context carried on stream entries.

Needs ``pip install 'eventbus[otel]'`` (opentelemetry-api); spans go wherever the application's
OpenTelemetry SDK sends them (none is configured here). Without OpenTelemetry, importing this
module fails with one line saying what to install.

- :data:`tracing` (or :func:`tracing_middleware` for another tracer provider): middleware that
  wraps each attempt in a CONSUMER span named ``process <destination>``, with the messaging
  semantic-convention attributes (``messaging.system=redis``, ``messaging.destination.name``,
  ``messaging.operation.type=process``, ``messaging.message.body.size``,
  ``messaging.consumer.group.name``: the stream's group, or the handler's name on pub/sub), the
  outcome as the span status, a failure as an ``exception`` event, and what happens next as an
  event: ``eventbus.retry`` (retried in process), ``eventbus.redelivery`` (a stream entry left
  pending for redelivery) or ``eventbus.dead_letter``. Each attempt is a span of its own, so a
  span's duration is the attempt's, not the backoff between attempts.
- :func:`trace_publishing`: every :meth:`eventbus.Publisher.append` (``bus.append``,
  ``ctx.append``) of the process gets a PRODUCER span ``send <stream>`` and writes its W3C trace
  context into the entry's ``traceparent`` (and ``tracestate``) fields; the consuming handler's
  span continues that trace, in whatever process it runs.
- Requests (``bus.request``, ``ctx.request``) carry headers in their envelope: with
  :func:`trace_publishing`, each request gets a CLIENT span ``request <channel>`` that lasts until
  its reply (or its error) arrives, and its trace context travels in the request's headers, so the
  responder's ``process`` span is its child, in whatever process it runs: one trace from the
  request, through the handler, to the reply.
- Plain pub/sub messages carry no headers, so nothing is propagated on them by default. The opt-in
  convention: a JSON object payload with a top-level ``"traceparent"`` string (see
  :func:`with_trace_context`) is continued by the consumer's span; anything else starts a new trace.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from eventbus._errors import LoadError

try:
    from opentelemetry import trace
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test without OpenTelemetry
    missing = getattr(exc, "name", None) or str(exc)
    raise LoadError(
        f"eventbus tracing needs OpenTelemetry: pip install 'eventbus[otel]' (missing: {missing})"
    ) from None

import orjson

import eventbus._publisher as _publisher
import eventbus._requests as _requests
from eventbus._context import Context
from eventbus._errors import PayloadError, Reject
from eventbus._message import Message
from eventbus.middleware import Invoke, Middleware

INSTRUMENTATION = "eventbus"
SYSTEM = "redis"
# W3C trace context only (not the application's global propagator, which may add baggage and other
# headers): these are the field names eventbus reserves on stream entries.
_PROPAGATOR = TraceContextTextMapPropagator()
_TRACEPARENT = b'"traceparent"'


def _stream_fields_carrier(fields: dict[bytes, bytes]) -> dict[str, str]:
    carrier: dict[str, str] = {}
    for name in (b"traceparent", b"tracestate"):
        value = fields.get(name)
        if value is not None:
            carrier[name.decode()] = value.decode("ascii", "replace")
    return carrier


def _pubsub_carrier(data: bytes) -> dict[str, str]:
    # Only payloads that can follow the convention are parsed: a JSON object naming "traceparent".
    if not data.startswith(b"{") or _TRACEPARENT not in data:
        return {}
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(obj, dict):
        return {}
    return {k: v for k in ("traceparent", "tracestate") if isinstance(v := obj.get(k), str)}


def _static_attributes(handler: str) -> dict[str, Any]:
    """The attributes every span of one handler has (copied per message, not rebuilt)."""
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.operation": "process",  # the name before semantic conventions 1.26
        # On pub/sub the handler is the consumer; a stream entry's span names its group instead.
        "messaging.consumer.group.name": handler,
        "eventbus.handler": handler,
    }


class _Tracing:
    """The tracing middleware; bound to each handler's name and retry policy at start-up."""

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        self.__qualname__ = "tracing"

    def _get_tracer(self) -> trace.Tracer:
        # Resolved when a runner starts, not at import: the application sets its provider first.
        if self._tracer is None:
            self._tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=self._provider)
        return self._tracer

    async def __call__(self, msg: Message, ctx: Context, call_next: Invoke) -> Any:
        # Used without a handler to bind to (called directly): no retry policy known.
        static = _static_attributes(ctx.handler or "")
        return await self._run(self._get_tracer(), static, msg, ctx, call_next, 0, {}, {})

    def for_handler(self, handler: Any) -> Middleware:
        tracer = self._get_tracer()
        static = _static_attributes(handler.name)
        retries: int = handler.options.retries
        max_deliveries = {s.name: s.stream.max_deliveries for s in handler.subscriptions if s.stream is not None}
        attempts: dict[int, int] = {}  # id(msg) -> attempts so far, while a message is being retried

        async def tracing(msg: Message, ctx: Context, call_next: Invoke) -> Any:
            return await self._run(tracer, static, msg, ctx, call_next, retries, max_deliveries, attempts)

        return tracing

    async def _run(
        self,
        tracer: trace.Tracer,
        static: dict[str, Any],
        msg: Message,
        ctx: Context,
        call_next: Invoke,
        retries: int,
        max_deliveries: dict[str, int],
        attempts: dict[int, int],
    ) -> Any:
        # The worker retries with the same Message object, alive meanwhile, so its id is a safe key
        # until the final outcome pops it (a shutdown during a backoff sleep may leave one behind).
        key = id(msg)
        attempt = attempts.get(key, 0) + 1
        attributes = dict(static)
        attributes["messaging.destination.name"] = msg.channel
        attributes["messaging.message.body.size"] = len(msg.data)
        attributes["eventbus.attempt"] = attempt
        pattern = msg.pattern
        if pattern is not None:
            attributes["messaging.destination.template"] = pattern
        links: list[Link] = []
        batch: list[Message] | None = getattr(msg, "messages", None)
        fields = getattr(msg, "fields", None)
        headers = getattr(msg, "headers", None)
        if batch is not None:  # a batch handler's call: one span, linked to each message's trace
            attributes["messaging.batch.message_count"] = len(batch)
            del attributes["messaging.message.body.size"]
            links = _links(batch)
            carrier: dict[str, str] = {}
        elif fields is not None:  # a stream entry
            attributes["messaging.consumer.group.name"] = getattr(msg, "group", "")
            attributes["messaging.message.id"] = getattr(msg, "id", "")
            attributes["eventbus.stream.deliveries"] = getattr(msg, "deliveries", 1)
            carrier = _stream_fields_carrier(fields)
        elif headers is not None:  # a request: its envelope has headers
            attributes["messaging.message.conversation_id"] = getattr(msg, "correlation", "")
            carrier = {k: v for k in ("traceparent", "tracestate") if isinstance(v := headers.get(k), str)}
        else:
            carrier = _pubsub_carrier(msg.data)
        parent = _PROPAGATOR.extract(carrier) if carrier else None
        # Span names stay low-cardinality: the pattern, not the channel, for a pattern subscription.
        with tracer.start_as_current_span(
            f"process {pattern or msg.channel}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                result = await call_next(msg, ctx)
            except BaseException as exc:
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.set_attribute("error.type", type(exc).__qualname__)
                final = not isinstance(exc, Exception) or isinstance(exc, (Reject, PayloadError)) or attempt > retries
                if not final:
                    attempts[key] = attempt
                    span.add_event("eventbus.retry", {"eventbus.next_attempt": attempt + 1})
                    raise
                attempts.pop(key, None)
                if isinstance(exc, Exception):
                    limit = max_deliveries.get(msg.channel)
                    deliveries = getattr(msg, "deliveries", 1)
                    if limit is not None and deliveries < limit and not isinstance(exc, (Reject, PayloadError)):
                        span.add_event("eventbus.redelivery", {"eventbus.stream.deliveries": deliveries})
                    else:
                        span.add_event("eventbus.dead_letter", {"eventbus.attempts": attempt})
                raise
            attempts.pop(key, None)
            # Success leaves the status unset, as the OpenTelemetry spec asks of instrumentation.
            return result


def _links(batch: list[Message]) -> list[Link]:
    """A link to the trace each message of a batch carries (the ones that carry one)."""
    links = []
    for message in batch:
        fields = getattr(message, "fields", None)
        carrier = _stream_fields_carrier(fields) if fields is not None else _pubsub_carrier(message.data)
        if carrier:
            context = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
            if context.is_valid:
                links.append(Link(context))
    return links


def tracing_middleware(*, tracer_provider: TracerProvider | None = None) -> Middleware:
    """The tracing middleware, on ``tracer_provider`` (default: the global one)."""
    return _Tracing(tracer_provider)


#: The tracing middleware on the global tracer provider: ``run --middleware eventbus.middlewares.tracing:tracing``.
tracing: Middleware = _Tracing()


def trace_publishing(enabled: bool = True, *, tracer_provider: TracerProvider | None = None) -> None:
    """Trace every stream append and every request of this process, and put its trace context on them.

    Process-wide (every :class:`~eventbus.Publisher`, so ``ctx.append`` and ``ctx.request`` in
    handlers too); ``enabled=False`` turns it off again. Plain pub/sub publishing is not changed
    (see the module notes).
    """
    if not enabled:
        _publisher.set_append_tracer(None)
        _requests.set_request_tracer(None)
        return
    tracer = trace.get_tracer(INSTRUMENTATION, tracer_provider=tracer_provider)

    @contextmanager
    def traced_request(channel: str, headers: dict[str, str]) -> Iterator[Callable[[int, int], None]]:
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "request",
            "messaging.destination.name": channel,
        }
        # CLIENT: it waits for the reply, and ends with it (or with the request's error).
        with tracer.start_as_current_span(f"request {channel}", kind=SpanKind.CLIENT, attributes=attributes) as span:
            _PROPAGATOR.inject(headers)

            def answered(replies: int, errors: int) -> None:
                span.set_attribute("eventbus.replies", replies)
                if errors:
                    span.set_status(Status(StatusCode.ERROR, f"{errors} of {replies} responder(s) failed"))

            yield answered

    _requests.set_request_tracer(traced_request)

    @contextmanager
    def traced_append(stream: str, fields: dict[str, Any]) -> Iterator[Callable[[str], None]]:
        data = fields.get("data")
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.operation": "publish",  # the name before semantic conventions 1.26
            "messaging.destination.name": stream,
        }
        if isinstance(data, (bytes, str)):
            attributes["messaging.message.body.size"] = len(data)
        with tracer.start_as_current_span(f"send {stream}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            for name, value in carrier.items():
                # A field of the application's own with that name wins: never overwrite data.
                fields.setdefault(name, value)

            def sent(entry_id: str) -> None:
                span.set_attribute("messaging.message.id", entry_id)

            yield sent

    _publisher.set_append_tracer(traced_append)


def with_trace_context(payload: dict[str, Any]) -> dict[str, Any]:
    """A copy of a JSON-object payload with the current trace context in ``"traceparent"``.

    The opt-in convention for pub/sub, whose messages have no headers: publish the result, and a
    handler with the tracing middleware continues the trace. Every subscriber sees the extra keys.
    """
    if not isinstance(payload, dict):
        raise TypeError(f"with_trace_context() takes a dict (a JSON object payload), got {type(payload).__name__}")
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return {**payload, **carrier}
