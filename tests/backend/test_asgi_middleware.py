"""llmrum_asgi.LlmrumMiddleware in-process, around a real Starlette app and OpenTelemetry's
real ASGI middleware (outside it, as FastAPIInstrumentor puts it, or inside it): trace
continuation, CORS, Server-Timing and the first-token mark (DESIGN.md §10.2). The
end-to-end run under uvicorn is test_server_ttft.py."""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind, StatusCode

from llmrum_asgi import LlmrumMiddleware
from llmrum_backend.servertiming import format_traceparent
from llmrum_backend.stream import FIRST_TOKEN_EVENT, STREAM_SPAN_NAME
from tests.backend import starlette_app
from tests.backend.asgi_client import Answer, request
from tests.tracecontext.conftest import CHAT_ORIGIN, PARENT_ID, TRACE_ID, MemorySpans

TRACEPARENT = f"00-{TRACE_ID}-{PARENT_ID}-01"
BROWSER = {"traceparent": TRACEPARENT, "baggage": "session.id=abc"}
OPTIONS: dict[str, Any] = {"cors_allowed_origins": [CHAT_ORIGIN], "cors_urls_regex": r"^/api/"}


def helper(app: Any = starlette_app.app, **options: Any) -> LlmrumMiddleware:
    return LlmrumMiddleware(app, **{**OPTIONS, **options})


def server_timing(answer: Answer) -> dict[str, str]:
    entries = [e.strip() for e in (answer.header("server-timing") or "").split(",")]
    return dict(e.split(";", 1) if ";" in e else (e, "") for e in entries if e)


def first_tokens(span: ReadableSpan) -> list[int]:
    return [e.timestamp for e in span.events if e.name == FIRST_TOKEN_EVENT]


def server_span(spans: MemorySpans) -> ReadableSpan:
    (server,) = [s for s in spans.exporter.get_finished_spans() if s.kind == SpanKind.SERVER]
    return server


class EndsItsSpanWhenHeadersLeave:
    """Stands in for an instrumentation that ends its server span as soon as the
    response headers leave, before a streamed body (what opentelemetry-instrumentation-
    django does, STANDARDS.md §10.7)."""

    def __init__(self, app: Any, spans: MemorySpans) -> None:
        self.app = app
        self.tracer = spans.provider.get_tracer("stand-in")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        span = self.tracer.start_span(f"POST {scope['path']}", kind=SpanKind.SERVER)

        async def ending_send(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                span.end()

        with trace.use_span(span, end_on_exit=False):
            await self.app(scope, receive, ending_send)


def outside(spans: MemorySpans) -> Any:
    """OpenTelemetry's ASGI middleware outermost, as FastAPIInstrumentor puts it."""
    return OpenTelemetryMiddleware(helper(), tracer_provider=spans.provider)


def inside(spans: MemorySpans) -> Any:
    return helper(OpenTelemetryMiddleware(starlette_app.app, tracer_provider=spans.provider))


def ended_early(spans: MemorySpans) -> Any:
    return EndsItsSpanWhenHeadersLeave(helper(), spans)


# --- Trace context and Server-Timing ------------------------------------------------


def test_without_instrumentation_it_continues_the_browsers_trace() -> None:
    before = time.time() * 1000
    answer = request(helper(), headers=BROWSER)
    after = time.time() * 1000
    seen = json.loads(answer.body)
    assert (seen["trace_id"], seen["span_id"], seen["remote"]) == (TRACE_ID, PARENT_ID, True)
    assert seen["session_id"] == "abc"
    entries = server_timing(answer)
    assert entries["trace"] == f"desc={TRACEPARENT}"
    assert float(entries["total"].removeprefix("dur=")) >= 0
    assert before <= float(entries["llmrum-now"].removeprefix("desc=")) <= after
    # Appended to the app's own entries.
    assert (answer.header("server-timing") or "").startswith('db;dur=1.5;desc="lookup", trace;')


@pytest.mark.parametrize(
    "traceparent",
    [None, f"ff-{TRACE_ID}-{PARENT_ID}-01", f"00-{'0' * 32}-{PARENT_ID}-01", "garbage"],
)
def test_it_starts_over_without_a_valid_traceparent(traceparent: str | None) -> None:
    headers = {"tracestate": "foo=1"} | ({"traceparent": traceparent} if traceparent else {})
    answer = request(helper(), headers=headers)
    assert answer.status == 200
    assert json.loads(answer.body)["valid"] is False
    assert "trace" not in server_timing(answer)


def test_two_traceparent_headers_restart_the_trace() -> None:
    app = helper()
    scope_headers = [("traceparent", TRACEPARENT), ("TraceParent", f"00-{TRACE_ID}-{'1' * 16}-01")]
    answer = request(app, headers=dict(scope_headers[:1]))
    assert json.loads(answer.body)["valid"] is True
    answer = request_with_repeats(app, scope_headers)
    assert json.loads(answer.body)["valid"] is False


def request_with_repeats(app: Any, headers: list[tuple[str, str]]) -> Answer:
    """A request whose header list repeats a name, as a proxy may send it."""
    messages: list[tuple[int, dict[str, Any]]] = []

    async def run() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            messages.append((time.time_ns(), message))

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/api/chat",
            "root_path": "",
            "query_string": b"",
            "headers": [(k.encode(), v.encode()) for k, v in headers],
        }
        await app(scope, receive, send)

    asyncio.run(run())
    return Answer(messages)


def test_it_never_fails_a_request_over_a_broken_propagator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("propagator bug")

    monkeypatch.setattr(propagate, "extract", broken)
    answer = request(helper(), headers=BROWSER)
    assert answer.status == 200
    assert json.loads(answer.body)["valid"] is False


def test_it_adds_no_server_timing_when_turned_off() -> None:
    answer = request(helper(server_timing=False), headers=BROWSER)
    assert answer.header("server-timing") == 'db;dur=1.5;desc="lookup"'


def test_outside_instrumentation_it_names_the_server_span(memory_spans: MemorySpans) -> None:
    answer = request(outside(memory_spans), headers=BROWSER)
    server = server_span(memory_spans)
    assert server.parent is not None and server.parent.span_id == int(PARENT_ID, 16)
    seen = json.loads(answer.body)
    # The app's spans are children of the server span, not re-parented under the browser's.
    assert (seen["span_id"], seen["remote"]) == (f"{server.context.span_id:016x}", False)
    assert server_timing(answer)["trace"] == f"desc={format_traceparent(server.context)}"
    assert server.attributes is not None and server.attributes["session.id"] == "abc"


def test_inside_instrumentation_it_leaves_the_server_span_to_it(
    memory_spans: MemorySpans,
) -> None:
    """Attaching the browser's context first would make OpenTelemetry's middleware start
    an INTERNAL span, and llmrum would find no gateway SERVER span."""
    answer = request(inside(memory_spans), headers=BROWSER)
    server = server_span(memory_spans)  # a SERVER span, the browser's span its parent
    assert server.parent is not None and server.parent.span_id == int(PARENT_ID, 16)
    assert json.loads(answer.body)["span_id"] == f"{server.context.span_id:016x}"
    assert server_timing(answer)["trace"] == f"desc={format_traceparent(server.context)}"
    assert server.attributes is not None and server.attributes["session.id"] == "abc"


# --- The first-token mark ---------------------------------------------------------


@pytest.mark.parametrize("setup", [outside, inside, ended_early])
def test_a_response_that_is_not_streamed_gets_no_mark(
    memory_spans: MemorySpans, setup: Any
) -> None:
    answer = request(setup(memory_spans), headers=BROWSER)
    assert answer.status == 200
    spans = memory_spans.exporter.get_finished_spans()
    assert STREAM_SPAN_NAME not in {s.name for s in spans}
    assert [t for s in spans for t in first_tokens(s)] == []


@pytest.mark.parametrize("setup", [outside, inside])
def test_an_open_server_span_carries_the_mark(memory_spans: MemorySpans, setup: Any) -> None:
    """OpenTelemetry's ASGI middleware ends its span at the last body message, so the
    first token lands on the server span itself; the empty first chunk does not count."""
    answer = request(setup(memory_spans), "/api/stream", headers=BROWSER)
    assert answer.body == b"hello world"
    (empty_sent, empty), (hello_sent, hello), *_ = answer.bodies
    assert (empty, hello) == (b"", b"hello")
    (mark,) = first_tokens(server_span(memory_spans))
    assert empty_sent <= mark <= hello_sent
    assert STREAM_SPAN_NAME not in {s.name for s in memory_spans.exporter.get_finished_spans()}


def test_a_server_span_ended_before_the_body_gets_a_stream_span(
    memory_spans: MemorySpans,
) -> None:
    answer = request(ended_early(memory_spans), "/api/stream", headers=BROWSER)
    (empty_sent, _), (hello_sent, _), *_ = answer.bodies
    spans = memory_spans.finished()
    server, stream = spans["POST /api/stream"], spans[STREAM_SPAN_NAME]
    assert stream.parent is not None and stream.parent.span_id == server.context.span_id
    assert stream.kind == SpanKind.INTERNAL
    (mark,) = first_tokens(stream)
    assert empty_sent <= mark <= hello_sent  # the empty first chunk did not count
    assert server.end_time is not None and stream.start_time is not None
    assert server.end_time <= stream.start_time <= empty_sent
    assert stream.end_time is not None and mark <= stream.end_time
    assert stream.status.status_code == StatusCode.UNSET
    assert first_tokens(server) == []


def test_a_body_that_fails_still_ends_its_stream_span(memory_spans: MemorySpans) -> None:
    with pytest.raises(RuntimeError, match="model connection lost"):
        request(ended_early(memory_spans), "/api/failing", headers=BROWSER)
    stream = memory_spans.finished()[STREAM_SPAN_NAME]
    assert stream.end_time is not None
    assert stream.status.status_code == StatusCode.ERROR
    assert stream.status.description == "RuntimeError: model connection lost"
    assert [e.name for e in stream.events] == [FIRST_TOKEN_EVENT, "exception"]


def test_without_a_server_span_there_is_no_mark(memory_spans: MemorySpans) -> None:
    answer = request(helper(), "/api/stream", headers=BROWSER)
    assert answer.body == b"hello world"
    assert memory_spans.exporter.get_finished_spans() == ()


# --- CORS ---------------------------------------------------------------------------


def preflight(app: Any, path: str = "/api/chat", **headers: str) -> Answer:
    return request(
        app,
        path,
        method="OPTIONS",
        headers={
            "origin": CHAT_ORIGIN,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type,traceparent,baggage,x-evil",
        }
        | headers,
    )


def test_it_answers_a_preflight_from_an_allowed_origin() -> None:
    answer = preflight(helper())
    assert answer.status == 204
    assert answer.body == b""  # answered here, not by the app
    assert answer.header("access-control-allow-origin") == CHAT_ORIGIN
    assert answer.header("vary") == "Origin"
    assert answer.header("access-control-allow-methods") == "GET, POST"
    assert answer.header("access-control-allow-headers") == (
        "accept, authorization, content-type, traceparent, tracestate, baggage"
    )
    assert answer.header("access-control-max-age") == "7200"
    assert answer.header("access-control-allow-credentials") is None
    assert answer.header("server-timing") is None


def test_it_gives_a_foreign_origin_no_cors_headers() -> None:
    foreign = {"origin": "https://evil.example.com"}
    answer = preflight(helper(), **foreign)
    assert answer.status == 204
    assert not answer.has_header("access-control-")
    assert answer.header("vary") == "Origin"
    answer = request(helper(), headers=foreign)
    assert not answer.has_header("access-control-allow-")
    assert answer.header("access-control-expose-headers") == "X-Request-Id"  # the app's own
    assert answer.header("timing-allow-origin") is None
    assert answer.header("vary") == "Accept-Encoding, Origin"


def test_it_leaves_other_paths_to_the_app() -> None:
    answer = preflight(helper(), "/elsewhere")
    assert answer.status == 405  # the app's own answer: its route takes GET only
    assert not answer.has_header("access-control-")
    answer = request(helper(), "/elsewhere", method="GET", headers={"origin": CHAT_ORIGIN})
    assert answer.body == b"not a chat endpoint"
    assert answer.header("vary") is None


def test_it_matches_paths_below_the_apps_root_path() -> None:
    assert preflight(helper()).status == 204
    answer = request(
        helper(),
        "/api/chat",
        method="OPTIONS",
        root_path="/chat-app",
        headers={"origin": CHAT_ORIGIN, "access-control-request-method": "POST"},
    )
    assert answer.status == 204


def test_it_lets_an_allowed_origin_read_the_response_and_its_timing() -> None:
    answer = request(helper(), headers={"origin": CHAT_ORIGIN, **BROWSER})
    assert answer.header("access-control-allow-origin") == CHAT_ORIGIN
    assert answer.header("timing-allow-origin") == CHAT_ORIGIN
    assert answer.header("access-control-expose-headers") == "X-Request-Id, Server-Timing"
    assert answer.header("vary") == "Accept-Encoding, Origin"


def test_it_takes_its_cors_options() -> None:
    answer = preflight(
        helper(
            cors_allow_credentials=True,
            cors_allow_headers=["Content-Type", "X-Chat-Id"],
            cors_allow_methods=["post"],
            cors_max_age=600,
        )
    )
    assert answer.header("access-control-allow-headers") == (
        "content-type, x-chat-id, traceparent, tracestate, baggage"
    )
    assert answer.header("access-control-allow-methods") == "POST"
    assert answer.header("access-control-max-age") == "600"
    assert answer.header("access-control-allow-credentials") == "true"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"cors_allowed_origins": ["https://chat.example.com/app"]}, "cors_allowed_origins"),
        ({"cors_allowed_origins": ["chat.example.com"]}, "cors_allowed_origins"),
        ({"cors_allowed_origins": "https://chat.example.com"}, "cors_allowed_origins"),
        ({"cors_allowed_origins": 7}, "cors_allowed_origins"),
        ({"cors_urls_regex": "(unclosed"}, "cors_urls_regex"),
        ({"cors_max_age": -1}, "cors_max_age"),
        ({"server_timing": "yes"}, "server_timing"),
    ],
)
def test_it_refuses_to_start_on_bad_options(options: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(named)}"):
        LlmrumMiddleware(starlette_app.app, **options)


def test_it_normalises_configured_origins() -> None:
    middleware = LlmrumMiddleware(
        starlette_app.app, cors_allowed_origins=("HTTPS://Chat.Example.com/", " ")
    )
    assert middleware.options.cors_allowed_origins == {"https://chat.example.com"}


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
def test_other_scopes_pass_through_untouched(kind: str) -> None:
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict[str, Any]:
        return {}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": kind, "headers": [(b"traceparent", TRACEPARENT.encode())]}
    asyncio.run(helper(app)(scope, receive, send))
    assert seen == [(scope, receive, send)]
