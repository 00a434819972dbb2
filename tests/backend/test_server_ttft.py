"""Server TTFT end to end (DESIGN.md §10.2): a chat gateway calls a streaming
OpenAI-compatible model server through the real OpenAI SDK, instrumented by
opentelemetry-instrumentation-openai-v2 2.4b0 (which puts no ``time_to_first_chunk`` on
its span), and exports its spans over OTLP/HTTP to llmrum under gunicorn; then the trace
is stitched. The only first-token mark is the helper's, and llmrum's server TTFT must
match the gateway's own record of when it handed on its first byte, within 5 ms.

- Django behind llmrum_django with OpenTelemetry's Django instrumentation, under
  gunicorn: the server span ends before the body, so the mark rides on ``llmrum.stream``.
- FastAPI behind llmrum_asgi with ``FastAPIInstrumentor``, under uvicorn: the server span
  stays open while the body streams and carries the mark itself.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import pytest
from django.core.management import call_command

from correlator.models import Turn
from llmrum_backend.stream import FIRST_TOKEN_EVENT, STREAM_SPAN_NAME, TRACER_NAME
from tests import factories
from tests.backend.fake_openai import WORDS, fake_openai
from tests.backend.gateway_answer import MODEL
from tests.integration.conftest import post_beacon
from tests.tracecontext.conftest import run_gateway, serve
from tests.tracecontext.linking import chat, exporting_to, trace_entry, wait_for_spans

SPAN_KIND_INTERNAL, SPAN_KIND_SERVER, SPAN_KIND_CLIENT = 1, 2, 3
TOLERANCE_MS = 5.0


@dataclass(frozen=True)
class Gateway:
    path: str
    server_span: str
    # The span carrying the first_token event.
    marked_span: str
    start: Callable[..., AbstractContextManager[str]]


def django_gateway(log: Path, **env: str) -> AbstractContextManager[str]:
    return run_gateway(
        "tests.tracecontext.otel_gateway:application",
        log,
        OTEL_PYTHON_DJANGO_EXCLUDED_URLS="elsewhere",  # the start-up probe's path
        **env,
    )


def fastapi_gateway(log: Path, **env: str) -> AbstractContextManager[str]:
    return serve(
        lambda port: [sys.executable, "-m", "uvicorn", "tests.backend.fastapi_gateway:app",
                      "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
        log,
        OTEL_PYTHON_FASTAPI_EXCLUDED_URLS="elsewhere",
        **env,
    )  # fmt: skip


GATEWAYS = {
    "django": Gateway(
        "/api/openai-stream", "POST api/openai-stream", STREAM_SPAN_NAME, django_gateway
    ),
    "fastapi": Gateway(
        "/api/chat-stream", "POST /api/chat-stream", "POST /api/chat-stream", fastapi_gateway
    ),
}


@pytest.mark.postgres
@pytest.mark.parametrize("name", GATEWAYS)
def test_the_stored_server_ttft_is_the_gateways_first_byte(
    name: str, start_web: Callable[..., str], tmp_path: Path
) -> None:
    gateway = GATEWAYS[name]
    llmrum = start_web()
    app = factories.make_app()
    trace_id, browser_span_id = factories.trace_id(), factories.span_id()
    turn = factories.turn_event(trace_id=trace_id, span_id=browser_span_id)
    batch = factories.batch([turn], session={"id": "abc", "started_at": factories.now_ms()})
    status, _, answer = post_beacon(llmrum, app.application.public_key, batch)
    assert status == 202, answer

    log = tmp_path / f"{name}-gateway.log"
    with (
        fake_openai() as model_url,
        gateway.start(
            log,
            GATEWAY_OPENAI_BASE_URL=model_url,
            **exporting_to(llmrum, app.ingest_token, f"{name}-gateway"),
        ) as url,
    ):
        status, server_timing, data = chat(url, gateway.path, f"00-{trace_id}-{browser_span_id}-01")
    # Leaving stopped the gateway gracefully: its batch processor flushed at exit.
    assert status == 200, log.read_text(errors="replace")[-4000:]
    *deltas, closing, done = [json.loads(d) if d != "[DONE]" else d for d in data]
    assert "".join(d["delta"] for d in deltas) == "".join(WORDS)
    assert done == "[DONE]"
    first_byte_ns = closing["first_byte_ns"]

    spans = {span.name: span for span in wait_for_spans(trace_id, 3, log)}
    server = spans[gateway.server_span]
    assert (server.kind, server.parent_span_id) == (SPAN_KIND_SERVER, browser_span_id)
    assert trace_entry(server_timing).split("-")[2] == server.span_id
    # The model call: the openai-v2 instrumentation's CLIENT span, with no TTFT of its own.
    model = spans[f"chat {MODEL}"]
    assert (model.kind, model.parent_span_id) == (SPAN_KIND_CLIENT, server.span_id)
    assert (model.ttft_s, model.ttft_source) == (None, "")
    marked = spans[gateway.marked_span]
    (mark,) = [e["time_ns"] for e in marked.events if e["name"] == FIRST_TOKEN_EVENT]
    assert marked.ttft_source == f"event:{FIRST_TOKEN_EVENT}"
    if marked is not server:
        assert (marked.kind, marked.parent_span_id) == (SPAN_KIND_INTERNAL, server.span_id)
        assert marked.scope["name"] == TRACER_NAME
        assert marked.service == server.service  # the app's own exporter sent it
        assert server.end_ns <= marked.start_ns <= mark <= marked.end_ns

    call_command("stitch", "--finalize-all")
    stitched = Turn.objects.get(trace__trace_id=trace_id)
    assert stitched.server_ttft_source == f"event:{FIRST_TOKEN_EVENT}"
    first_byte_ms = (first_byte_ns - server.start_ns) / 1e6
    assert stitched.server_ttft_ms == pytest.approx(first_byte_ms, abs=TOLERANCE_MS)
