"""Tiny gateway views for the helper's tests: they report the trace context the
request runs in, as a real gateway's spans would see it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from opentelemetry import baggage, trace


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


async def astream(request: HttpRequest) -> StreamingHttpResponse:
    async def body() -> AsyncIterator[str]:
        yield json.dumps(seen_context())

    return StreamingHttpResponse(body(), content_type="application/json")


def elsewhere(request: HttpRequest) -> HttpResponse:
    return HttpResponse("not a chat endpoint")
