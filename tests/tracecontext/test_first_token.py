"""llmrum_django's first-token mark (DESIGN.md §10.2), in-process, behind the real
opentelemetry-instrumentation-django, which ends its server span before a streamed body
is sent: the mark then rides on ``llmrum.stream``, a child of the server span covering
the body. The end-to-end run (gunicorn, the OpenAI SDK, llmrum stitching) is
tests/backend/test_server_ttft.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
from asgiref.sync import async_to_sync
from django.core.wsgi import get_wsgi_application
from django.test import AsyncClient, Client, override_settings
from opentelemetry import trace
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from llmrum_backend.servertiming import format_traceparent
from llmrum_backend.stream import FIRST_TOKEN_EVENT, STREAM_SPAN_NAME, TRACER_NAME
from tests.tracecontext.conftest import (
    HELPER_SETTINGS,
    MIDDLEWARE,
    PARENT_ID,
    TRACE_ID,
    MemorySpans,
)

TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"


def by_name(exporter: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    spans = exporter.get_finished_spans()
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def first_tokens(span: ReadableSpan) -> list[int]:
    return [e.timestamp for e in span.events if e.name == FIRST_TOKEN_EVENT]


def assert_stream_span_of(stream: ReadableSpan, server: ReadableSpan) -> None:
    assert stream.kind == SpanKind.INTERNAL
    assert stream.parent is not None and stream.parent.span_id == server.context.span_id
    assert stream.context.trace_id == server.context.trace_id
    assert stream.instrumentation_scope is not None
    assert stream.instrumentation_scope.name == TRACER_NAME
    # The same provider as the server span's: the app's exporter sends both.
    assert stream.resource == server.resource


def test_a_response_that_is_not_streamed_gets_no_mark(instrumented: InMemorySpanExporter) -> None:
    response = Client().post("/api/chat", HTTP_TRACEPARENT=TRACEPARENT)
    assert response.status_code == 200
    spans = by_name(instrumented)
    assert list(spans) == ["POST api/chat"]
    assert first_tokens(spans["POST api/chat"]) == []


def test_a_streamed_answer_marks_its_first_chunk_on_a_span_of_its_own(
    instrumented: InMemorySpanExporter,
) -> None:
    response = Client().post("/api/chat-stream", HTTP_TRACEPARENT=TRACEPARENT)
    (server,) = instrumented.get_finished_spans()  # ended before the body is sent
    chunks = iter(response.streaming_content)
    assert next(chunks) == b""  # the helper's: the server sends the headers now
    before = time.time_ns()
    assert next(chunks).startswith(b'data: {"delta": "Hi"}')
    after = time.time_ns()
    rest = list(chunks)
    assert rest[-1] == b"data: [DONE]\n\n"

    spans = by_name(instrumented)
    stream = spans[STREAM_SPAN_NAME]
    assert_stream_span_of(stream, server)
    (mark,) = first_tokens(stream)
    assert before <= mark <= after
    assert server.end_time is not None and stream.end_time is not None
    assert server.end_time <= stream.start_time <= mark <= stream.end_time
    assert stream.status.status_code == StatusCode.UNSET
    assert first_tokens(server) == []  # an event on the ended span would have been dropped
    assert server_timing_trace(response) == format_traceparent(server.context)


def server_timing_trace(response: Any) -> str:
    for entry in response["Server-Timing"].split(","):
        name, _, params = entry.strip().partition(";")
        if name == "trace":
            return params.removeprefix("desc=")
    raise AssertionError(response["Server-Timing"])


def test_an_empty_first_chunk_is_not_the_first_token(instrumented: InMemorySpanExporter) -> None:
    response = Client().get("/api/stream-empty-first", HTTP_TRACEPARENT=TRACEPARENT)
    chunks = iter(response.streaming_content)
    assert next(chunks) == b""  # the helper's, for the headers
    assert next(chunks) == b""  # the app's
    between = time.time_ns()
    assert next(chunks) == b"hello"
    assert list(chunks) == [b" world"]
    stream = by_name(instrumented)[STREAM_SPAN_NAME]
    (mark,) = first_tokens(stream)
    assert mark >= between
    # The span covers the body from its start, the empty chunk included.
    assert stream.start_time is not None and stream.start_time <= between


def test_a_body_that_fails_still_ends_its_stream_span(instrumented: InMemorySpanExporter) -> None:
    response = Client().get("/api/stream-failing", HTTP_TRACEPARENT=TRACEPARENT)
    with pytest.raises(RuntimeError, match="model connection lost"):
        list(response.streaming_content)
    stream = by_name(instrumented)[STREAM_SPAN_NAME]
    assert stream.end_time is not None
    assert stream.status.status_code == StatusCode.ERROR
    assert stream.status.description == "RuntimeError: model connection lost"
    assert [e.name for e in stream.events] == [FIRST_TOKEN_EVENT, "exception"]


def test_a_body_the_server_closes_early_ends_its_stream_span(
    instrumented: InMemorySpanExporter,
) -> None:
    """A client that goes away mid-answer: the WSGI server closes the body."""
    response = Client().post("/api/chat-stream", HTTP_TRACEPARENT=TRACEPARENT)
    chunks = iter(response.streaming_content)
    next(chunks), next(chunks)  # the helper's empty chunk, then the first token
    response.close()
    stream = by_name(instrumented)[STREAM_SPAN_NAME]
    assert stream.end_time is not None
    assert stream.status.status_code == StatusCode.UNSET  # not the server's error
    assert len(first_tokens(stream)) == 1


def test_without_a_server_span_there_is_no_mark(memory_spans: MemorySpans) -> None:
    """No instrumentation: the helper continues the browser's trace, but llmrum counts
    server TTFT from the gateway's server span, and there is none to count from."""
    with override_settings(MIDDLEWARE=MIDDLEWARE, **HELPER_SETTINGS):
        response = Client().post("/api/chat-stream", HTTP_TRACEPARENT=TRACEPARENT)
        assert list(response.streaming_content)[-1] == b"data: [DONE]\n\n"
    assert memory_spans.exporter.get_finished_spans() == ()


def test_a_server_span_still_open_carries_the_mark_itself(memory_spans: MemorySpans) -> None:
    """OpenTelemetry's WSGI middleware around the Django app keeps its server span open
    until the body ends, so the event lands on it and no span of the helper's is made."""
    with override_settings(MIDDLEWARE=MIDDLEWARE, **HELPER_SETTINGS):
        app = OpenTelemetryMiddleware(get_wsgi_application(), tracer_provider=memory_spans.provider)
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": "/api/chat-stream",
            "HTTP_TRACEPARENT": TRACEPARENT,
        }
        setup_testing_defaults(environ)
        statuses: list[str] = []
        body = app(environ, lambda status, headers, *exc: statuses.append(status))
        try:
            chunks = list(body)
        finally:
            body.close()
    assert statuses == ["200 OK"] and chunks[-1] == b"data: [DONE]\n\n"
    (server,) = memory_spans.exporter.get_finished_spans()
    assert server.kind == SpanKind.SERVER
    assert len(first_tokens(server)) == 1


def test_under_asgi_the_instrumentations_span_is_named_and_the_stream_marked(
    instrumented: InMemorySpanExporter,
) -> None:
    """Django's ASGI handler with opentelemetry-instrumentation-django[asgi]: the same
    server span ended before the body, the same ``llmrum.stream``."""

    async def run() -> tuple[Any, list[bytes]]:
        response = await AsyncClient().post(
            "/api/astream", headers={"traceparent": TRACEPARENT, "baggage": "session.id=s1"}
        )
        return response, [chunk async for chunk in response.streaming_content]

    response, chunks = async_to_sync(run)()
    assert len(chunks) == 1
    spans = by_name(instrumented)
    server = spans["POST api/astream"]
    assert server.parent is not None and server.parent.span_id == int(PARENT_ID, 16)
    assert server.attributes is not None and server.attributes["session.id"] == "s1"
    assert server_timing_trace(response) == format_traceparent(server.context)
    stream = spans[STREAM_SPAN_NAME]
    assert_stream_span_of(stream, server)
    assert len(first_tokens(stream)) == 1


@pytest.fixture(autouse=True)
def _no_trace_left_behind() -> Iterator[None]:
    """However the body ends, the thread goes back to the next request with no trace."""
    yield
    assert not trace.get_current_span().get_span_context().is_valid
