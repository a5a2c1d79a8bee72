"""Tracing: spans with the messaging conventions, trace context across processes on streams."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk", reason="OpenTelemetry SDK not installed (pip install -e '.[dev]')")

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from eventbus import Batch, Context, Message, Reject, RemoteError, Runner, on, on_pattern, on_stream
from eventbus.middlewares.tracing import (
    trace_publishing,
    tracing_middleware,
    with_trace_context,
)
from tests.cli_process import ROOT
from tests.redis_server import RedisServer


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    trace_publishing(False)
    provider.shutdown()


async def wait_for_spans(exporter: InMemorySpanExporter, count: int) -> list[ReadableSpan]:
    for _ in range(250):
        spans = list(exporter.get_finished_spans())
        if len(spans) >= count:
            return spans
        await asyncio.sleep(0.02)
    raise AssertionError(f"expected {count} span(s), got {list(exporter.get_finished_spans())}")


PUBLISHER = textwrap.dedent(
    """
    import asyncio, json, sys
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    import eventbus
    from eventbus.middlewares.tracing import trace_publishing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace_publishing(tracer_provider=provider)

    async def main():
        async with eventbus.connect(sys.argv[1]) as bus:
            entry = await bus.append("orders", {"order": "7", "amount": "12.50"})
        (span,) = exporter.get_finished_spans()
        print(json.dumps({
            "entry": entry,
            "trace_id": span.context.trace_id,
            "span_id": span.context.span_id,
            "name": span.name,
            "kind": span.kind.name,
            "attributes": dict(span.attributes),
        }))

    asyncio.run(main())
    """
)


async def test_a_stream_entry_carries_the_trace_from_the_publisher_process(
    redis_server: RedisServer, provider: TracerProvider, exporter: InMemorySpanExporter, subprocess_env: dict[str, str]
) -> None:
    published = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PUBLISHER, redis_server.url],
        env=subprocess_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    sent = json.loads(published.stdout)
    assert sent["name"] == "send orders" and sent["kind"] == "PRODUCER"
    assert sent["attributes"]["messaging.system"] == "redis"
    assert sent["attributes"]["messaging.destination.name"] == "orders"
    assert sent["attributes"]["messaging.operation.type"] == "send"
    assert sent["attributes"]["messaging.message.id"] == sent["entry"]
    seen: list[Any] = []

    @on_stream("orders", group="billing", block=0.1, start="0")
    async def bill(msg: Message, ctx: Context) -> None:
        seen.append(msg.json())

    async with Runner([bill], url=redis_server.url, middleware=[tracing_middleware(tracer_provider=provider)]):
        (span,) = await wait_for_spans(exporter, 1)
    # The payload is what was appended: the trace fields are not part of it.
    assert seen == [{"order": "7", "amount": "12.50"}]
    assert span.context.trace_id == sent["trace_id"]
    assert span.parent is not None and span.parent.span_id == sent["span_id"]
    assert span.name == "process orders" and span.kind is SpanKind.CONSUMER
    assert span.status.status_code is StatusCode.UNSET  # success: instrumentation leaves it unset
    attributes = dict(span.attributes or {})
    assert attributes["messaging.system"] == "redis"
    assert attributes["messaging.destination.name"] == "orders"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.operation"] == "process"
    assert attributes["messaging.consumer.group.name"] == "billing"
    assert attributes["messaging.message.id"] == sent["entry"]
    assert attributes["messaging.message.body.size"] == len(b'{"order":"7","amount":"12.50"}')
    assert attributes["eventbus.handler"] == "bill"
    assert attributes["eventbus.stream.deliveries"] == 1


async def test_pub_sub_continues_a_trace_only_by_the_opt_in_convention(
    redis_server: RedisServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @on_pattern("orders.*")
    async def audit(msg: Message, ctx: Context) -> None:
        pass

    tracer = trace.get_tracer("test", tracer_provider=provider)
    async with Runner([audit], url=redis_server.url, middleware=[tracing_middleware(tracer_provider=provider)]) as r:
        assert r.publisher is not None
        with tracer.start_as_current_span("checkout") as checkout:
            await r.publisher.publish("orders.eu", with_trace_context({"order": 1}))
            await r.publisher.publish("orders.us", {"order": 2})  # no trace context: a trace of its own
        spans = await wait_for_spans(exporter, 3)
    by_channel = {dict(s.attributes or {}).get("messaging.destination.name"): s for s in spans}
    continued, separate = by_channel["orders.eu"], by_channel["orders.us"]
    assert continued.context.trace_id == checkout.get_span_context().trace_id
    assert separate.context.trace_id != checkout.get_span_context().trace_id and separate.parent is None
    # A pattern subscription names its span by the pattern (low cardinality), the channel in the attributes.
    assert continued.name == "process orders.*"
    assert dict(continued.attributes or {})["messaging.destination.template"] == "orders.*"
    assert dict(continued.attributes or {})["messaging.consumer.group.name"] == "audit"


async def test_a_batch_is_one_span_linked_to_each_message_trace(
    redis_server: RedisServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @on("orders", batch=Batch(max_size=3, max_wait=5.0))
    async def store(msgs: list[Message], ctx: Context) -> None:
        pass

    tracer = trace.get_tracer("test", tracer_provider=provider)
    async with Runner([store], url=redis_server.url, middleware=[tracing_middleware(tracer_provider=provider)]) as r:
        assert r.publisher is not None
        with tracer.start_as_current_span("checkout") as checkout:
            await r.publisher.publish("orders", with_trace_context({"order": 1}))
        await r.publisher.publish("orders", {"order": 2})  # no trace context: no link
        with tracer.start_as_current_span("refund") as refund:
            await r.publisher.publish("orders", with_trace_context({"order": 3}))
        spans = [s for s in await wait_for_spans(exporter, 3) if s.name == "process orders"]
    [span] = spans
    assert dict(span.attributes or {})["messaging.batch.message_count"] == 3
    assert [link.context.span_id for link in span.links] == [
        checkout.get_span_context().span_id,
        refund.get_span_context().span_id,
    ]


async def test_retries_and_dead_letters_are_span_events_with_error_status(
    redis_server: RedisServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @on("pay", retries=1, backoff=0.001)
    async def flaky(msg: Message, ctx: Context) -> None:
        if msg.text == "reject":
            raise Reject("no such order")
        raise ConnectionError("payment API down")

    async with Runner([flaky], url=redis_server.url, middleware=[tracing_middleware(tracer_provider=provider)]) as r:
        assert r.publisher is not None
        await r.publisher.publish("pay", "fail")
        spans = await wait_for_spans(exporter, 2)
        await r.publisher.publish("pay", "reject")
        spans = await wait_for_spans(exporter, 3)
    first, second, rejected = spans
    assert [dict(s.attributes or {})["eventbus.attempt"] for s in spans] == [1, 2, 1]
    for span in spans:
        assert span.status.status_code is StatusCode.ERROR
        assert span.events[0].name == "exception"
    assert dict(first.attributes or {})["error.type"] == "ConnectionError"
    assert [e.name for e in first.events] == ["exception", "eventbus.retry"]
    assert [e.name for e in second.events] == ["exception", "eventbus.dead_letter"]
    assert [e.name for e in rejected.events] == ["exception", "eventbus.dead_letter"]  # Reject: no retry


async def test_a_failed_stream_entry_is_left_for_redelivery(
    redis_server: RedisServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    @on_stream("jobs", group="g", block=0.1, max_deliveries=3, claim_idle=60)
    async def job(msg: Message, ctx: Context) -> None:
        raise RuntimeError("boom")

    async with Runner([job], url=redis_server.url, middleware=[tracing_middleware(tracer_provider=provider)]) as r:
        assert r.publisher is not None
        await r.publisher.append("jobs", "x")
        (span,) = await wait_for_spans(exporter, 1)
    assert [e.name for e in span.events] == ["exception", "eventbus.redelivery"]


def test_without_opentelemetry_the_middleware_fails_at_load_with_one_line(subprocess_env: dict[str, str]) -> None:
    # A finder that hides OpenTelemetry, as on a machine without the extra installed.
    script = textwrap.dedent(
        """
        import sys
        class Hide:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        sys.meta_path.insert(0, Hide())
        from eventbus._cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "run",
            "sample_apps.orders",
            "--middleware",
            "eventbus.middlewares.tracing:tracing",
        ],
        env=subprocess_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert "pip install 'eventbus[otel]'" in result.stderr


async def test_an_append_from_a_traced_handler_continues_its_trace(
    redis_server: RedisServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_publishing(tracer_provider=provider)

    @on("orders")
    async def accept(msg: Message, ctx: Context) -> None:
        await ctx.append("shipments", {"order": msg.text})

    @on_stream("shipments", group="shipping", block=0.1)
    async def ship(msg: Message, ctx: Context) -> None:
        assert msg.json() == {"order": "9"}  # the trace fields stay out of the payload

    middleware = [tracing_middleware(tracer_provider=provider)]
    async with Runner([accept, ship], url=redis_server.url, middleware=middleware) as r:
        assert r.publisher is not None
        await r.publisher.publish("orders", "9")
        spans = await wait_for_spans(exporter, 3)
    by_name = {s.name: s for s in spans}
    accepted, sent, shipped = by_name["process orders"], by_name["send shipments"], by_name["process shipments"]
    assert len({accepted.context.trace_id, sent.context.trace_id, shipped.context.trace_id}) == 1
    assert sent.parent is not None and sent.parent.span_id == accepted.context.span_id
    assert shipped.parent is not None and shipped.parent.span_id == sent.context.span_id
    assert shipped.status.status_code is StatusCode.UNSET


async def test_a_request_carries_its_trace_to_the_responder_and_back(
    redis_server: RedisServer, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    trace_publishing(tracer_provider=provider)

    @on("rates.get")
    async def rate(msg: Message, ctx: Context) -> str:
        return "1.25"

    @on("rates.fail")
    async def fail(msg: Message, ctx: Context) -> str:
        raise LookupError("no such pair")

    middleware = [tracing_middleware(tracer_provider=provider)]
    async with Runner([rate, fail], url=redis_server.url, middleware=middleware) as r:
        assert r.publisher is not None
        assert (await r.publisher.request("rates.get", "EURUSD", timeout=10)).text == "1.25"
        with pytest.raises(RemoteError):
            await r.publisher.request("rates.fail", "EURUSD", timeout=10)
        spans = await wait_for_spans(exporter, 4)
    by_name = {s.name: s for s in spans}
    requested, processed = by_name["request rates.get"], by_name["process rates.get"]
    assert requested.kind is SpanKind.CLIENT and requested.status.status_code is StatusCode.UNSET
    assert processed.parent is not None and processed.parent.span_id == requested.context.span_id
    assert processed.context.trace_id == requested.context.trace_id
    # The request's span ends with the reply, so it encloses the responder's.
    assert requested.start_time is not None and processed.start_time is not None
    assert requested.end_time is not None and processed.end_time is not None
    assert requested.start_time <= processed.start_time and processed.end_time <= requested.end_time
    assert dict(requested.attributes or {})["eventbus.replies"] == 1
    assert dict(processed.attributes or {})["messaging.message.conversation_id"]
    failed, failing = by_name["request rates.fail"], by_name["process rates.fail"]
    assert failed.status.status_code is StatusCode.ERROR  # the remote error, raised in the span
    assert failing.parent is not None and failing.parent.span_id == failed.context.span_id
