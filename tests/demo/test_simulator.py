"""The simulated gateway and model server: their spans are what llmrum expects of a
real gateway and a vLLM server, and their timing is a chat's."""

from __future__ import annotations

import random
import statistics
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from demo import simulator
from demo.gateway import gateway_chat
from demo.telemetry import GATEWAY_RESOURCE, MODEL_RESOURCE, DemoTracers
from rumserver.ingest.otlp.spans import map_request
from rumserver.roles import trace_roles

BROWSER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
BROWSER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def tracers() -> tuple[DemoTracers, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    providers = []
    for resource in (GATEWAY_RESOURCE, MODEL_RESOURCE):
        provider = TracerProvider(resource=Resource.create(resource))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        providers.append(provider)
    demo = DemoTracers(
        gateway=providers[0].get_tracer("test"),
        model=providers[1].get_tracer("test"),
        providers=tuple(providers),
    )
    return demo, exporter


def browser_parent() -> Any:
    context = SpanContext(
        trace_id=int(BROWSER_TRACE, 16),
        span_id=int(BROWSER_SPAN, 16),
        is_remote=True,
        trace_flags=TraceFlags(1),
    )
    return trace.set_span_in_context(NonRecordingSpan(context))


def plan(**kwargs: Any) -> simulator.AnswerPlan:
    kwargs.setdefault("output_tokens", 12)
    kwargs.setdefault("error_rate", 0.0)
    return simulator.plan_answer(random.Random(4), "llama-3.1-8b-instruct", **kwargs)


def run(tracers: DemoTracers, answer_plan: simulator.AnswerPlan, stop_after: int | None = None):
    answer = gateway_chat(tracers=tracers, parent=browser_parent(), plan=answer_plan,
                          session_id="s-1", sleep=lambda s: None)  # fmt: skip
    chunks: list[bytes] = []
    if not isinstance(answer.body, bytes):
        for i, chunk in enumerate(answer.body):
            chunks.append(chunk)
            if stop_after is not None and i >= stop_after:
                answer.body.close()  # type: ignore[attr-defined]  # the browser went away
                break
    return answer, chunks


def mapped_rows(exporter: InMemorySpanExporter) -> list[Any]:
    request = encode_spans(exporter.get_finished_spans())
    return map_request(request, keep_content=False, max_spans=100).rows


def test_a_streamed_answer_makes_gateway_and_model_spans_under_the_browser_span(tracers):
    demo, exporter = tracers
    answer, chunks = run(demo, plan())
    assert answer.status == 200 and answer.content_type == "text/event-stream"
    assert chunks[-1] == b"data: [DONE]\n\n"
    assert sum(b'"content"' in c for c in chunks) == 12
    assert b'"usage"' in chunks[-2]

    rows = {row.name: row for row in mapped_rows(exporter)}
    server, client, model = (rows["POST /demo/v1/chat/completions"], rows["chat llama-3.1-8b-instruct"],
                             rows["llm_request"])  # fmt: skip
    assert {row.trace_id for row in rows.values()} == {BROWSER_TRACE}
    assert server.parent_span_id == BROWSER_SPAN and server.kind == 2
    assert client.parent_span_id == server.span_id and client.kind == 3
    assert model.parent_span_id == client.span_id and model.kind == 2
    roles = trace_roles(rows.values(), BROWSER_SPAN)
    assert (roles[server.service], roles[client.service], roles[model.service]) == (
        "gateway", "gateway", "model")  # fmt: skip
    assert server.attributes["session.id"] == "s-1"
    assert server.ttft_source == "gen_ai.response.time_to_first_chunk"
    # The model span reads like vLLM's llm_request, with the GenAI names too.
    assert model.gen_ai_operation == "chat"
    assert (model.request_model, model.response_model) == ("llama-3.1-8b-instruct",) * 2
    assert (model.input_tokens, model.output_tokens) == (plan().input_tokens, 12)
    assert model.ttft_source == "gen_ai.latency.time_to_first_token"
    assert model.queue_s is not None
    assert model.start_ns >= server.start_ns and model.end_ns <= server.end_ns


def test_the_model_server_is_recognised_without_a_pinned_role(tracers):
    demo, exporter = tracers
    run(demo, plan())
    roles = trace_roles(mapped_rows(exporter), "")  # no browser span: rules 1 and 3 only
    assert roles == {"demo-ai-gateway": "gateway", "demo-vllm": "model"}
    assert "llmrum.role" not in MODEL_RESOURCE


def test_stop_ends_every_span_with_the_tokens_so_far(tracers):
    demo, exporter = tracers
    run(demo, plan(output_tokens=50), stop_after=5)
    rows = {row.name: row for row in mapped_rows(exporter)}
    assert len(rows) == 3  # all ended
    assert rows["llm_request"].output_tokens < 50
    assert rows["POST /demo/v1/chat/completions"].attributes["llmrum.demo.client_closed"] is True


@pytest.mark.parametrize("status", [429, 500])
def test_errors_answer_json_with_the_status_and_error_spans(tracers, status):
    demo, exporter = tracers
    answer_plan = plan()
    answer_plan.error_status = status
    answer, _ = run(demo, answer_plan)
    assert answer.status == status and isinstance(answer.body, bytes)
    assert b'"error"' in answer.body
    rows = mapped_rows(exporter)
    server = next(r for r in rows if r.kind == 2 and r.service == "demo-ai-gateway")
    assert server.status_code == 2 and server.attributes["http.response.status_code"] == status
    names = {r.name for r in rows}
    # A 429 is the gateway's own rate limit: the model is never called.
    assert ("llm_request" in names) is (status == 500)


def test_token_timing_looks_like_a_chat():
    rng = random.Random(11)
    plans = [simulator.plan_answer(rng, error_rate=0.0) for _ in range(2000)]
    ttfts = [p.ttft_s for p in plans]
    assert min(ttfts) >= 0.150 - 1e-9 and max(ttfts) <= 1.200 + 1e-9
    assert 0.2 < statistics.median(ttfts) < 0.6
    # Some answers wait in a slow queue.
    assert 0.05 < sum(p.queue_s > 0.2 for p in plans) / len(plans) < 0.3
    gaps = [g for p in plans for g in p.gaps_s]
    inside = sum(0.020 <= g <= 0.080 for g in gaps) / len(gaps)
    assert inside > 0.97 and max(gaps) <= 0.250
    assert 0.025 < statistics.median(gaps) < 0.060
    assert len({round(g, 3) for g in gaps}) > 50  # varied, not a metronome
    assert {p.model.name for p in plans} == {m.name for m in simulator.MODELS}


def test_about_one_answer_in_fifteen_fails():
    rng = random.Random(5)
    plans = [simulator.plan_answer(rng) for _ in range(3000)]
    statuses = [p.error_status for p in plans if p.error_status]
    assert 0.04 < len(statuses) / len(plans) < 0.095
    assert set(statuses) == {429, 500}
    assert all(p.output_tokens == 0 for p in plans if p.error_status)
