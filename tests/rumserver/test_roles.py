"""The role rule (DESIGN.md §5) on plain values: rumserver.roles."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rumserver.roles import role_in_trace, trace_roles

BROWSER_SPAN = "b" * 16


@dataclass
class S:
    service: str
    kind: int = 1
    parent_span_id: str = ""
    resource: dict[str, Any] = field(default_factory=dict)
    gen_ai_operation: str = ""
    request_model: str = ""
    ttft_source: str = ""
    queue_s: float | None = None
    role: str = "service"


def test_the_first_matching_rule_decides_for_every_span_of_the_service():
    spans = [
        S("gateway", kind=2, parent_span_id=BROWSER_SPAN),
        S("gateway", kind=3, request_model="gpt-4o"),  # its OpenAI client span
        S("vllm", kind=2, ttft_source="gen_ai.latency.time_to_first_token"),
        S("retriever", kind=2, parent_span_id=BROWSER_SPAN, resource={"llmrum.role": "service"}),
        S("router", kind=2, request_model="gpt-4o", resource={"llmrum.role": "gateway"}),
        S("cache"),
    ]
    assert trace_roles(spans, BROWSER_SPAN) == {
        "cache": "service",
        "gateway": "gateway",
        "retriever": "service",  # pinned beats rule 2
        "router": "gateway",  # pinned beats rule 3
        "vllm": "model",
    }
    # Without a browser span, rule 2 names nothing.
    assert trace_roles(spans, "")["gateway"] == "service"


def test_a_browser_exporter_decides_nothing():
    page = {"llmrum.source": "browser-otlp", "llmrum.role": "gateway"}
    forged = S("chat-gateway", kind=2, parent_span_id=BROWSER_SPAN, resource=page)
    real = S("chat-gateway", kind=2, parent_span_id=BROWSER_SPAN)
    roles = trace_roles([forged, real], BROWSER_SPAN)
    assert roles == {"chat-gateway": "gateway"}
    assert (role_in_trace(forged, roles), role_in_trace(real, roles)) == ("service", "gateway")
    assert trace_roles([forged], BROWSER_SPAN) == {}


def test_the_role_in_a_trace():
    roles = {"gateway": "gateway"}
    assert role_in_trace(S("browser", role="browser"), roles) == "browser"
    assert role_in_trace(S("gateway"), roles) == "gateway"
    # A service the trace's roles do not name (traces stitched before they kept their
    # roles): the role stored on the span.
    assert role_in_trace(S("vllm", role="model"), roles) == "model"
