"""Tiny gateway views for the helper's tests: they report the trace context the
request runs in, as a real gateway's spans would see it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import openai
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from opentelemetry import baggage, trace

from tests.backend.gateway_answer import FirstByte, content_of, create_arguments, openai_settings

# The global tracer provider's: a no-op one unless the process configured the SDK.
TRACER = trace.get_tracer(__name__)


def seen_context() -> dict[str, Any]:
    span_context = trace.get_current_span().get_span_context()
    return {
        "valid": span_context.is_valid,
        "remote": span_context.is_remote,
        "trace_id": trace.format_trace_id(span_context.trace_id),
        "span_id": trace.format_span_id(span_context.span_id),
        "flags": f"{span_context.trace_flags:02x}",
        "session_id": baggage.get_baggage("session.id"),
    }


def chat(request: HttpRequest) -> JsonResponse:
    return JsonResponse(seen_context())


def chat_with_own_headers(request: HttpRequest) -> JsonResponse:
    response = JsonResponse(seen_context())
    response["Server-Timing"] = 'db;dur=1.5;desc="lookup"'
    response["Access-Control-Expose-Headers"] = "X-Request-Id"
    return response


def stream(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[str]:
        # Runs when the server iterates the body, after every middleware returned.
        yield json.dumps(seen_context())

    return StreamingHttpResponse(body(), content_type="application/json")


def chat_stream(request: HttpRequest) -> StreamingHttpResponse:
    """A chat answer as a gateway streams one: the model is called lazily inside the
    body, under a span kept current across its chunks; after the last chunk the gateway
    makes one more span (a moderation call, say) inside it."""

    def body() -> Iterator[str]:
        with TRACER.start_as_current_span("chat gpt-4o-mini", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("gen_ai.operation.name", "chat")
            span.set_attribute("gen_ai.provider.name", "openai")
            span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
            for word in ("Hi", " there", "!"):
                yield f"data: {json.dumps({'delta': word})}\n\n"
            with TRACER.start_as_current_span("moderate answer"):
                pass
        yield "data: [DONE]\n\n"

    return StreamingHttpResponse(body(), content_type="text/event-stream")


def openai_stream(request: HttpRequest) -> StreamingHttpResponse:
    """A chat answer through the OpenAI SDK (instrumented by openai-v2 in the gunicorn
    gateway), the model called lazily inside the streamed body."""
    arguments = create_arguments(request.body)

    def body() -> Iterator[str]:
        first = FirstByte()
        with openai.OpenAI(**openai_settings()) as client:
            for chunk in client.chat.completions.create(**arguments):
                if content := content_of(chunk):
                    yield first.event(content)
        yield from first.closing()

    return StreamingHttpResponse(body(), content_type="text/event-stream")


def stream_empty_first(request: HttpRequest) -> StreamingHttpResponse:
    """An empty chunk first, as a gateway flushing its headers early sends one."""
    return StreamingHttpResponse(iter([b"", b"hello", b" world"]), content_type="text/plain")


def stream_failing(request: HttpRequest) -> StreamingHttpResponse:
    def body() -> Iterator[bytes]:
        yield b"partial"
        raise RuntimeError("model connection lost")

    return StreamingHttpResponse(body(), content_type="text/plain")


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[str]:
        yield json.dumps(seen_context())

    return StreamingHttpResponse(body(), content_type="application/json")


def elsewhere(request: HttpRequest) -> HttpResponse:
    return HttpResponse("not a chat endpoint")
