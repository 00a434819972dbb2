"""Real OpenTelemetry peers against a live llmrum: the Python SDK's OTLP/HTTP
exporter, and the openai client instrumented by opentelemetry-instrumentation-openai-v2."""

from __future__ import annotations

import json
import secrets
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry import context
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from rumserver.models import DirtyTrace, Span
from tests import factories
from tests.clients.relay import relay_to
from tests.clients.trace_api import api_token, assert_spans_arrived, read_stitched_trace


def provider_for(
    live_server,
    token: str,
    service: str = "chat-gateway",
    compression: Compression = Compression.NoCompression,
    url: str = "",
) -> TracerProvider:
    exporter = OTLPSpanExporter(
        endpoint=f"{url or live_server.url}/v1/traces",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        compression=compression,
    )
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


@pytest.mark.django_db(transaction=True)
def test_the_sdk_exporter_round_trips_spans_intact(live_server):
    app = factories.make_app()
    provider = provider_for(live_server, app.ingest_token)
    tracer = provider.get_tracer("tests.otlp", "1.2.3")
    with tracer.start_as_current_span("POST /api/chat", kind=SpanKind.SERVER) as root:
        root.set_attributes(
            {"http.request.method": "POST", "http.response.status_code": 200, "ratio": 0.25,
             "flag": True, "tags": ["a", "b"], "ints": [1, 2, 3]}
        )  # fmt: skip
        with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as child:
            child.set_attribute("gen_ai.operation.name", "chat")
            child.set_attribute("gen_ai.system", "openai")
            child.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            child.set_attribute("gen_ai.usage.prompt_tokens", 812)
            child.set_attribute("gen_ai.usage.completion_tokens", 57)
            child.add_event("first_token", {"index": 0})
            child.set_status(Status(StatusCode.ERROR, "upstream reset"))
    provider.shutdown()

    root_ctx, child_ctx = root.get_span_context(), child.get_span_context()
    stored_root = Span.objects.get(span_id=f"{root_ctx.span_id:016x}")
    stored_child = Span.objects.get(span_id=f"{child_ctx.span_id:016x}")
    assert stored_root.trace_id == f"{root_ctx.trace_id:032x}" == stored_child.trace_id
    assert stored_child.parent_span_id == stored_root.span_id and stored_root.parent_span_id == ""
    assert (stored_root.start_ns, stored_root.end_ns) == (root.start_time, root.end_time)
    assert (stored_child.start_ns, stored_child.end_ns) == (child.start_time, child.end_time)
    assert stored_root.attributes == {
        "http.request.method": "POST", "http.response.status_code": 200, "ratio": 0.25,
        "flag": True, "tags": ["a", "b"], "ints": [1, 2, 3],
    }  # fmt: skip
    assert (stored_root.kind, stored_child.kind) == (2, 3)
    assert stored_root.service == "chat-gateway"
    assert stored_root.resource["service.name"] == "chat-gateway"
    assert stored_root.scope == {"name": "tests.otlp", "version": "1.2.3"}
    assert (stored_child.status_code, stored_child.status_message) == (2, "upstream reset")
    event = stored_child.events[0]
    assert event["name"] == "first_token" and event["attributes"] == {"index": 0}
    assert event["time_ns"] == child.events[0].timestamp
    # Old GenAI names land in the typed columns.
    assert (stored_child.gen_ai_provider, stored_child.request_model) == ("openai", "gpt-4o-mini")
    assert (stored_child.input_tokens, stored_child.output_tokens) == (812, 57)
    assert stored_child.ttft_source == "event:first_token"
    assert stored_child.ttft_s == pytest.approx((event["time_ns"] - child.start_time) / 1e9)
    assert DirtyTrace.objects.filter(trace_id=stored_root.trace_id).exists()


def _as_sent(span) -> dict:
    """The SDK's own record of a span, in the shape tests.clients.trace_api compares."""
    return {
        "trace_id": f"{span.context.trace_id:032x}",
        "span_id": f"{span.context.span_id:016x}",
        "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
        "name": span.name,
        "kind": span.kind.value + 1,  # the SDK's SpanKind starts at INTERNAL = 0
        "start_ns": span.start_time,
        "end_ns": span.end_time,
        "attributes": {k: list(v) if isinstance(v, tuple) else v
                       for k, v in span.attributes.items()},
        "events": [{"name": e.name, "time_ns": e.timestamp, "attributes": dict(e.attributes)}
                   for e in span.events],
        "status": {"code": span.status.status_code.value, "message": span.status.description or ""},
    }  # fmt: skip


@pytest.mark.django_db(transaction=True)
def test_the_sdk_exporter_with_gzip_round_trips_spans_through_the_api(live_server):
    app = factories.make_app()
    with relay_to(live_server.url) as relay:
        provider = provider_for(
            live_server, app.ingest_token, compression=Compression.Gzip, url=relay.url
        )
        tracer = provider.get_tracer("tests.otlp.gzip")
        with tracer.start_as_current_span("POST /api/chat", kind=SpanKind.SERVER) as root:
            root.set_attributes({"http.response.status_code": 200, "tags": ["a", "b"]})
            with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as child:
                child.set_attributes({"gen_ai.operation.name": "chat",
                                      "gen_ai.request.model": "gpt-4o-mini",
                                      "gen_ai.usage.output_tokens": 57,
                                      "gen_ai.request.temperature": 0.5})  # fmt: skip
                child.add_event("first_token", {"index": 0})
                child.set_status(Status(StatusCode.ERROR, "upstream reset"))
            with tracer.start_as_current_span("moderation") as internal:
                internal.set_attribute("note", "héllo ✓ 日本")
        provider.shutdown()
        posts = [r for r in relay.requests() if r.method == "POST"]

    assert len(posts) == 3  # SimpleSpanProcessor: one request a span
    assert all(p.headers["content-encoding"] == "gzip" for p in posts)
    assert all(p.headers["content-type"] == "application/x-protobuf" for p in posts)
    sent = [_as_sent(span) for span in (root, child, internal)]
    answer = read_stitched_trace(live_server.url, api_token(app), sent[0]["trace_id"])
    assert_spans_arrived(answer, sent, service="chat-gateway", role="service")


class _FakeOpenAI(BaseHTTPRequestHandler):
    """A small OpenAI-compatible server: streams a chat completion as SSE chunks."""

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen_traceparent = self.headers.get("traceparent")  # type: ignore[attr-defined]
        model = request["model"]
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
        chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant"}}]}]
        chunks += [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in ("Hi", " there")]
        chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        chunks.append({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": 2,
                                                "total_tokens": 13}})  # fmt: skip
        for chunk in chunks:
            self.wfile.write(f"data: {json.dumps({**base, **chunk})}\n\n".encode())
            self.wfile.flush()
            time.sleep(0.01)
        self.wfile.write(b"data: [DONE]\n\n")

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.django_db(transaction=True)
def test_an_instrumented_openai_stream_lands_typed_under_the_browser_trace(live_server):
    from openai import OpenAI
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
    from opentelemetry.propagate import extract

    app = factories.make_app()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    provider = provider_for(live_server, app.ingest_token, service="chat-gateway")
    instrumentor = OpenAIInstrumentor()
    instrumentor.instrument(tracer_provider=provider)
    browser_trace, browser_span = secrets.token_hex(16), secrets.token_hex(8)
    try:
        client = OpenAI(base_url=f"http://127.0.0.1:{server.server_port}/v1", api_key="test")
        token = context.attach(extract({"traceparent": f"00-{browser_trace}-{browser_span}-01"}))
        try:
            stream = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "hello"}],
                stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        finally:
            context.detach(token)
        provider.force_flush()
    finally:
        instrumentor.uninstrument()
        provider.shutdown()
        server.shutdown()
    assert text == "Hi there"
    stored = Span.objects.get(trace_id=browser_trace)
    assert stored.parent_span_id == browser_span  # continues the browser's trace
    assert (stored.kind, stored.name) == (3, "chat gpt-4o-mini")
    assert (stored.gen_ai_operation, stored.gen_ai_provider) == ("chat", "openai")
    assert (stored.request_model, stored.response_model) == ("gpt-4o-mini", "gpt-4o-mini")
    assert (stored.input_tokens, stored.output_tokens) == (11, 2)
    assert stored.service == "chat-gateway"
