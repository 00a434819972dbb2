"""TraceContextMiddleware: trace continuation, Server-Timing and CORS, in-process."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmrum_django import conf
from llmrum_django.middleware import TraceContextMiddleware, _stream_in_context
from llmrum_django.propagation import format_traceparent
from tests.tracecontext.conftest import (
    CHAT_ORIGIN,
    HELPER_SETTINGS,
    MIDDLEWARE,
    PARENT_ID,
    TRACE_ID,
)

TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
helper = override_settings(MIDDLEWARE=MIDDLEWARE, **HELPER_SETTINGS)


def server_timing(response: HttpResponse) -> dict[str, str]:
    """Server-Timing entries by name, their parameters as the raw rest."""
    entries = [e.strip() for e in response.get("Server-Timing", "").split(",") if e.strip()]
    return dict(e.split(";", 1) if ";" in e else (e, "") for e in entries)


def preflight(client: Client, path: str = "/api/chat", **headers: str) -> HttpResponse:
    headers.setdefault("HTTP_ORIGIN", CHAT_ORIGIN)
    return client.options(
        path,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type,traceparent,baggage,x-evil",
        **headers,
    )


@helper
def test_it_continues_the_browsers_trace_and_baggage() -> None:
    response = Client().post(
        "/api/chat",
        "{}",
        content_type="application/json",
        HTTP_TRACEPARENT=TRACEPARENT,
        HTTP_BAGGAGE="session.id=abc,other=1",
    )
    seen = response.json()
    assert seen["trace_id"] == TRACE_ID
    assert seen["span_id"] == PARENT_ID
    assert seen["remote"] is True
    assert seen["session_id"] == "abc"
    # Detached again: the next request on this thread does not inherit the trace.
    assert not trace.get_current_span().get_span_context().is_valid


@helper
def test_it_echoes_the_incoming_context_and_times_the_request() -> None:
    before = time.time() * 1000
    response = Client().post("/api/chat", HTTP_TRACEPARENT=f"00-{TRACE_ID}-{PARENT_ID}-03")
    after = time.time() * 1000
    entries = server_timing(response)
    assert entries["trace"] == f"desc=00-{TRACE_ID}-{PARENT_ID}-03"
    assert float(entries["total"].removeprefix("dur=")) >= 0
    assert before <= float(entries["llmrum-now"].removeprefix("desc=")) <= after


@helper
@pytest.mark.parametrize(
    "traceparent",
    [
        None,
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase hex
        f"ff-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",
        f"00-{'0' * 32}-{PARENT_ID}-01",
        # Two traceparent headers, joined by the WSGI server.
        f"{TRACEPARENT},00-{TRACE_ID}-{PARENT_ID}-00",
        "garbage\u00e9",
    ],
)
def test_it_starts_over_without_a_valid_traceparent(traceparent: str | None) -> None:
    headers = {"HTTP_TRACESTATE": "foo=1"}
    if traceparent is not None:
        headers["HTTP_TRACEPARENT"] = traceparent
    response = Client().post("/api/chat", **headers)
    assert response.status_code == 200
    assert response.json()["valid"] is False
    entries = server_timing(response)
    assert "trace" not in entries  # no context to name
    assert {"total", "llmrum-now"} <= entries.keys()


@helper
def test_it_never_fails_a_request_over_a_broken_propagator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("propagator bug")

    monkeypatch.setattr(propagate, "extract", broken)
    response = Client().post("/api/chat", HTTP_TRACEPARENT=TRACEPARENT)
    assert response.status_code == 200
    assert response.json()["valid"] is False


def test_it_clears_reserved_flag_bits_in_the_echo() -> None:
    remote = propagate.extract({"traceparent": f"cc-{TRACE_ID}-{PARENT_ID}-ff-future"})
    span_context = trace.get_current_span(remote).get_span_context()
    assert format_traceparent(span_context) == f"00-{TRACE_ID}-{PARENT_ID}-03"


@helper
@override_settings(LLMRUM_SERVER_TIMING=False)
def test_it_adds_no_server_timing_when_turned_off() -> None:
    response = Client().post("/api/chat", HTTP_TRACEPARENT=TRACEPARENT)
    assert "Server-Timing" not in response


@helper
def test_it_appends_to_the_apps_own_headers() -> None:
    response = Client().post(
        "/api/chat-own-headers", HTTP_TRACEPARENT=TRACEPARENT, HTTP_ORIGIN=CHAT_ORIGIN
    )
    assert response["Server-Timing"].startswith('db;dur=1.5;desc="lookup", trace;desc=00-')
    assert response["Access-Control-Expose-Headers"] == "X-Request-Id, Server-Timing"


# --- With OpenTelemetry's Django instrumentation in front ----------------------


def test_it_names_the_instrumentations_server_span(instrumented: InMemorySpanExporter) -> None:
    response = Client().post(
        "/api/chat",
        HTTP_TRACEPARENT=f"00-{TRACE_ID}-{PARENT_ID}-03",
        HTTP_BAGGAGE="session.id=abc",
    )
    (span,) = instrumented.get_finished_spans()
    server = span.get_span_context()
    assert (span.kind, span.name) == (trace.SpanKind.SERVER, "POST api/chat")
    assert span.parent is not None and span.parent.span_id == int(PARENT_ID, 16)
    # The app's spans are children of the server span, not re-parented under the browser's.
    seen = response.json()
    assert (seen["trace_id"], seen["span_id"]) == (TRACE_ID, f"{server.span_id:016x}")
    assert seen["remote"] is False
    assert seen["session_id"] == "abc"
    assert server_timing(response)["trace"] == f"desc=00-{TRACE_ID}-{server.span_id:016x}-03"
    assert span.attributes is not None and span.attributes["session.id"] == "abc"


def test_it_names_the_server_span_of_a_trace_the_gateway_starts(
    instrumented: InMemorySpanExporter,
) -> None:
    response = Client().post("/api/chat", HTTP_TRACEPARENT=f"00-{'0' * 32}-{PARENT_ID}-01")
    (span,) = instrumented.get_finished_spans()
    assert span.parent is None  # a new trace, not the invalid one
    assert response.json()["trace_id"] == f"{span.context.trace_id:032x}"
    assert server_timing(response)["trace"] == f"desc={format_traceparent(span.context)}"
    assert span.attributes is not None and "session.id" not in span.attributes


def test_a_streamed_body_runs_under_the_server_span(instrumented: InMemorySpanExporter) -> None:
    response = Client().post(
        "/api/stream", HTTP_TRACEPARENT=TRACEPARENT, HTTP_BAGGAGE="session.id=s1"
    )
    # The instrumentation ends its span when its middleware returns, before the body
    # streams: spans made inside the stream outlive their parent, but stay in the trace.
    (span,) = instrumented.get_finished_spans()
    seen = json.loads(b"".join(response.streaming_content))
    assert (seen["trace_id"], seen["span_id"]) == (TRACE_ID, f"{span.context.span_id:016x}")
    assert seen["session_id"] == "s1"
    assert not trace.get_current_span().get_span_context().is_valid


# --- Streamed answers and async stacks --------------------------------------


@helper
def test_it_keeps_the_trace_while_the_body_streams() -> None:
    response = Client().post(
        "/api/stream", HTTP_TRACEPARENT=TRACEPARENT, HTTP_BAGGAGE="session.id=s1"
    )
    assert not trace.get_current_span().get_span_context().is_valid
    # The test client iterates the body only now, after the middleware returned.
    seen = json.loads(b"".join(response.streaming_content))
    assert (seen["trace_id"], seen["session_id"]) == (TRACE_ID, "s1")
    assert not trace.get_current_span().get_span_context().is_valid


@pytest.mark.parametrize("is_async", [False, True])
def test_a_span_the_body_keeps_current_across_a_yield_stays_the_parent(is_async: bool) -> None:
    """A gateway wraps the model's chunks in its own span; what it makes after a
    chunk has gone out (a moderation call, a tool) must still be that span's child."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")

    def body() -> Iterator[bytes]:
        with tracer.start_as_current_span("model"):
            yield b"1"
            with tracer.start_as_current_span("after-a-chunk"):
                pass
            yield b"2"

    async def abody() -> AsyncIterator[bytes]:
        for chunk in body():
            yield chunk

    with tracer.start_as_current_span("server"):
        response = StreamingHttpResponse(abody() if is_async else body())
        _stream_in_context(response, otel_context.get_current())
    if is_async:

        async def collect() -> list[bytes]:
            return [chunk async for chunk in response.streaming_content]

        chunks = async_to_sync(collect)()
    else:
        chunks = list(response.streaming_content)[1:]  # after the helper's b"" for the headers
    assert chunks == [b"1", b"2"]
    parents = {
        span.name: span.parent.span_id if span.parent else None
        for span in exporter.get_finished_spans()
    }
    ids = {span.name: span.context.span_id for span in exporter.get_finished_spans()}
    assert parents["after-a-chunk"] == ids["model"]
    assert parents["model"] == ids["server"]
    assert not trace.get_current_span().get_span_context().is_valid


@helper
def test_it_runs_in_an_async_stack() -> None:
    async def run() -> tuple[Any, bytes]:
        client = AsyncClient()
        headers = {"traceparent": TRACEPARENT, "origin": CHAT_ORIGIN}
        plain = await client.post("/api/chat", headers=headers)
        streamed = await client.post("/api/astream", headers=headers)
        chunks = [chunk async for chunk in streamed.streaming_content]
        return plain, b"".join(chunks)

    plain, streamed_body = async_to_sync(run)()
    assert plain.json()["trace_id"] == TRACE_ID
    assert server_timing(plain)["trace"] == f"desc={TRACEPARENT}"
    assert plain["Access-Control-Allow-Origin"] == CHAT_ORIGIN
    assert json.loads(streamed_body)["trace_id"] == TRACE_ID


# --- CORS ---------------------------------------------------------------------


@helper
def test_it_answers_a_preflight_from_an_allowed_origin() -> None:
    response = preflight(Client())
    assert response.status_code == 204
    assert response.content == b""  # answered here, not by the view
    assert response["Access-Control-Allow-Origin"] == CHAT_ORIGIN
    assert response["Vary"] == "Origin"
    assert response["Access-Control-Allow-Methods"] == "GET, POST"
    allowed = response["Access-Control-Allow-Headers"].split(", ")
    assert allowed == [
        "accept",
        "authorization",
        "content-type",
        "traceparent",
        "tracestate",
        "baggage",
    ]
    assert response["Access-Control-Max-Age"] == "7200"
    assert "Access-Control-Allow-Credentials" not in response
    assert "Server-Timing" not in response


@helper
def test_it_gives_a_foreign_origin_no_cors_headers() -> None:
    answer = preflight(Client(), HTTP_ORIGIN="https://evil.example.com")
    actual = Client().post("/api/chat", HTTP_ORIGIN="https://evil.example.com")
    for response in (answer, actual):
        assert not [h for h in response.headers if h.lower().startswith("access-control-")]
        assert "Timing-Allow-Origin" not in response
        assert response["Vary"] == "Origin"
    assert answer.status_code == 204


@helper
def test_it_leaves_other_paths_to_the_app() -> None:
    response = preflight(Client(), "/elsewhere")
    assert response.content == b"not a chat endpoint"
    assert "Access-Control-Allow-Origin" not in response
    assert "Vary" not in response


@helper
@override_settings(
    LLMRUM_CORS_ALLOW_CREDENTIALS=True,
    LLMRUM_CORS_ALLOW_HEADERS=["Content-Type", "X-Chat-Id"],
    LLMRUM_CORS_ALLOW_METHODS=["post"],
    LLMRUM_CORS_MAX_AGE=600,
)
def test_it_takes_its_cors_settings() -> None:
    response = preflight(Client())
    assert response["Access-Control-Allow-Headers"] == (
        "content-type, x-chat-id, traceparent, tracestate, baggage"
    )
    assert response["Access-Control-Allow-Methods"] == "POST"
    assert response["Access-Control-Max-Age"] == "600"
    assert response["Access-Control-Allow-Credentials"] == "true"


@helper
def test_it_lets_an_allowed_origin_read_the_response_and_its_timing() -> None:
    response = Client().post("/api/chat", HTTP_ORIGIN=CHAT_ORIGIN, HTTP_TRACEPARENT=TRACEPARENT)
    assert response["Access-Control-Allow-Origin"] == CHAT_ORIGIN
    assert response["Timing-Allow-Origin"] == CHAT_ORIGIN
    assert response["Access-Control-Expose-Headers"] == "Server-Timing"
    assert response["Vary"] == "Origin"


@pytest.mark.parametrize(
    "overrides",
    [
        {"LLMRUM_CORS_ALLOWED_ORIGINS": ["https://chat.example.com/app"]},
        {"LLMRUM_CORS_ALLOWED_ORIGINS": ["chat.example.com"]},
        {"LLMRUM_CORS_ALLOWED_ORIGINS": "https://chat.example.com"},
        {"LLMRUM_CORS_URLS_REGEX": "(unclosed"},
        {"LLMRUM_CORS_MAX_AGE": -1},
        {"LLMRUM_SERVER_TIMING": "yes"},
    ],
)
def test_it_refuses_to_start_on_bad_settings(overrides: dict[str, Any]) -> None:
    with override_settings(**overrides), pytest.raises(ImproperlyConfigured):
        TraceContextMiddleware(lambda request: HttpResponse())


def test_it_normalises_configured_origins() -> None:
    with override_settings(LLMRUM_CORS_ALLOWED_ORIGINS=["HTTPS://Chat.Example.com/", " "]):
        config = conf.load()
    assert config.cors_allowed_origins == {"https://chat.example.com"}
    assert re.match(config.cors_urls, "/anything")
