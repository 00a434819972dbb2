"""The simulated AI gateway and model server behind the demo chat.

A request to ``/demo/v1/chat/completions`` flows like a real deployment's:

- the **gateway** continues the browser's trace (``traceparent`` read by the
  llmrum_django helper), opens its SERVER span, answers 429 now and then (its
  rate limit), and calls the model through an OpenAI-style GenAI CLIENT span
  (``chat <model>``), forwarding ``traceparent`` to the model server;
- the **model server** (vLLM-like, in process: a second HTTP hop would tie up a
  second sync worker for the whole answer) opens ``llm_request`` (SERVER) under
  that ``traceparent``, sleeps the queue and prefill time, streams the tokens
  with varied gaps, fails with a 500 now and then, and records vLLM's
  ``gen_ai.latency.*`` attributes and token usage;
- the gateway streams OpenAI chat-completion chunks as SSE, with
  ``stream_options.include_usage``-style usage at the end, and ends its spans
  when the stream ends or the browser goes away (Stop).

Models marked hosted (an API vendor) have no model-server span, as in reality:
only the gateway's client span tells about them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from demo.simulator import AnswerPlan
from demo.telemetry import DemoTracers

CHAT_ROUTE = "/demo/v1/chat/completions"
_propagator = TraceContextTextMapPropagator()
Sleep = Callable[[float], None]


class ModelServerError(Exception):
    status = 500


def sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n".encode()


def model_server_stream(
    *, tracer: trace.Tracer | None, headers: dict[str, str], plan: AnswerPlan, sleep: Sleep
) -> Iterator[str]:
    """A vLLM-style server answering one streamed request: yields token texts."""
    arrival_ns = time.time_ns()
    span = None
    if tracer is not None and plan.model.self_hosted:
        span = tracer.start_span(
            "llm_request",
            context=_propagator.extract(headers),
            kind=SpanKind.SERVER,
            start_time=arrival_ns,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": plan.model.name,
                "gen_ai.request.id": plan.request_id,
                "gen_ai.request.max_tokens": 1024,
                "gen_ai.request.temperature": 0.7,
                "gen_ai.request.top_p": 0.95,
                "gen_ai.request.n": 1,
            },
        )
    emitted = 0
    first_ns = scheduled_ns = last_ns = None
    finish = "abort"
    try:
        sleep(plan.queue_s)
        scheduled_ns = time.time_ns()
        if plan.error_status == 500:
            finish = "error"
            raise ModelServerError("the model server failed (simulated CUDA out of memory)")
        sleep(plan.prefill_s)
        first_ns = last_ns = time.time_ns()
        emitted = 1
        yield plan.token_text(0)
        for i, gap in enumerate(plan.gaps_s, start=1):
            sleep(gap)
            last_ns = time.time_ns()
            emitted += 1
            yield plan.token_text(i)
        finish = "stop"
    finally:
        if span is not None:
            end_ns = time.time_ns()
            attributes: dict[str, Any] = {
                "gen_ai.response.model": plan.model.name,
                "gen_ai.response.finish_reasons": [finish],
                "gen_ai.usage.prompt_tokens": plan.input_tokens,
                "gen_ai.usage.completion_tokens": emitted,
                "gen_ai.usage.input_tokens": plan.input_tokens,
                "gen_ai.usage.output_tokens": emitted,
                "gen_ai.latency.e2e": (end_ns - arrival_ns) / 1e9,
            }
            if scheduled_ns is not None:
                attributes["gen_ai.latency.time_in_queue"] = (scheduled_ns - arrival_ns) / 1e9
            if first_ns is not None and scheduled_ns is not None and last_ns is not None:
                attributes.update(
                    {
                        "gen_ai.latency.time_to_first_token": (first_ns - arrival_ns) / 1e9,
                        "gen_ai.latency.time_in_model_prefill": (first_ns - scheduled_ns) / 1e9,
                        "gen_ai.latency.time_in_model_decode": (last_ns - first_ns) / 1e9,
                        "gen_ai.latency.time_in_model_inference": (last_ns - scheduled_ns) / 1e9,
                    }
                )
            span.set_attributes(attributes)
            if finish == "error":
                span.set_attribute("error.type", "500")
                span.set_status(Status(StatusCode.ERROR, "simulated CUDA out of memory"))
            span.end(end_time=end_ns)


@dataclass
class GatewayAnswer:
    status: int
    content_type: str
    body: bytes | Iterator[bytes]
    span_context: trace.SpanContext  # the gateway server span, for Server-Timing


def gateway_chat(
    *,
    tracers: DemoTracers | None,
    parent: Context,
    plan: AnswerPlan,
    session_id: str = "",
    sleep: Sleep = time.sleep,
) -> GatewayAnswer:
    """Handle one chat request as the AI gateway."""
    tracer = tracers.gateway if tracers is not None else trace.NoOpTracer()
    model_tracer = tracers.model if tracers is not None else None
    attributes: dict[str, Any] = {
        "http.request.method": "POST",
        "http.route": CHAT_ROUTE,
        "url.path": CHAT_ROUTE,
        "url.scheme": "http",
    }
    if session_id:
        attributes["session.id"] = session_id
    server = tracer.start_span(
        f"POST {CHAT_ROUTE}", context=parent, kind=SpanKind.SERVER, attributes=attributes
    )
    server_start = time.time_ns()
    sleep(0.002 + (len(plan.request_id) % 5) / 1000)  # auth, routing, prompt template

    if plan.error_status == 429:
        server.set_attributes({"http.response.status_code": 429, "error.type": "429"})
        server.set_status(Status(StatusCode.ERROR, "rate limited"))
        server.end()
        error = {"message": "Rate limit reached, retry in a moment.", "type": "rate_limit_error"}
        return GatewayAnswer(
            429,
            "application/json",
            json.dumps({"error": error}).encode(),
            server.get_span_context(),
        )

    server_ctx = trace.set_span_in_context(server)
    client = tracer.start_span(
        f"chat {plan.model.name}",
        context=server_ctx,
        kind=SpanKind.CLIENT,
        attributes={
            "gen_ai.operation.name": "chat",
            "gen_ai.system": plan.model.provider,
            "gen_ai.request.model": plan.model.name,
            "gen_ai.request.stream": True,
            "server.address": "vllm.internal" if plan.model.self_hosted else "api.example.com",
            "server.port": 8000 if plan.model.self_hosted else 443,
        },
    )
    client_start = time.time_ns()
    headers: dict[str, str] = {}
    _propagator.inject(headers, context=trace.set_span_in_context(client))
    tokens = model_server_stream(tracer=model_tracer, headers=headers, plan=plan, sleep=sleep)
    if plan.error_status == 500:
        try:
            next(tokens)
        except ModelServerError as error:
            for span in (client, server):
                span.set_attribute("error.type", "500")
                span.set_status(Status(StatusCode.ERROR, str(error)))
            server.set_attribute("http.response.status_code", 500)
            client.end()
            server.end()
            body = {"error": {"message": "The model server failed.", "type": "server_error"}}
            return GatewayAnswer(
                500, "application/json", json.dumps(body).encode(), server.get_span_context()
            )

    def stream() -> Iterator[bytes]:
        base = {
            "id": plan.request_id,
            "object": "chat.completion.chunk",
            "created": server_start // 1_000_000_000,
            "model": plan.model.name,
        }
        emitted = 0
        closed_early = True
        try:
            yield sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
            for text in tokens:
                if emitted == 0:
                    now = time.time_ns()
                    server.set_attribute(
                        "gen_ai.response.time_to_first_chunk", (now - server_start) / 1e9
                    )
                    client.set_attribute(
                        "gen_ai.response.time_to_first_chunk", (now - client_start) / 1e9
                    )
                emitted += 1
                delta = {"index": 0, "delta": {"content": text}, "finish_reason": None}
                yield sse({**base, "choices": [delta]})
            yield sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            usage = {
                "prompt_tokens": plan.input_tokens,
                "completion_tokens": emitted,
                "total_tokens": plan.input_tokens + emitted,
            }
            yield sse({**base, "choices": [], "usage": usage})
            yield b"data: [DONE]\n\n"
            closed_early = False
        finally:
            tokens.close()
            client.set_attributes(
                {
                    "gen_ai.response.model": plan.model.name,
                    "gen_ai.response.id": plan.request_id,
                    "gen_ai.response.finish_reasons": ["cancelled" if closed_early else "stop"],
                    "gen_ai.usage.input_tokens": plan.input_tokens,
                    "gen_ai.usage.output_tokens": emitted,
                }
            )
            server.set_attribute("http.response.status_code", 200)
            if closed_early:
                # The browser went away (Stop, or the tab closed): not an error of ours.
                server.set_attribute("llmrum.demo.client_closed", True)
            client.end()
            server.end()

    return GatewayAnswer(200, "text/event-stream", stream(), server.get_span_context())
