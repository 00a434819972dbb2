"""A real-shaped chat turn, split into the pieces that reach llmrum separately:
the browser's turn beacon, and OTLP requests from the gateway (its SERVER span and
the OpenAI client span under it) and from vLLM (its llm_request span)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from django.test import Client

from tests import factories
from tests.otlp import builders

MS = 1_000_000  # ns


@dataclass
class GoldenTurn:
    """True times in server-clock ms; the browser reports them shifted by its clock error."""

    t0: float  # when the browser sent the request (server clock)
    browser_offset_ms: float = 0.0  # browser clock minus server clock
    outcome: str = "completed"
    trace_id: str = field(default_factory=lambda: secrets.token_hex(16))
    browser_span: str = field(default_factory=lambda: secrets.token_hex(8))
    gateway_span: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    client_span: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    model_span: bytes = field(default_factory=lambda: secrets.token_bytes(8))
    server_timing: bool = False
    regenerate_of: str | None = None
    session: str = "sess-golden"

    # Real shapes: 40 ms to the gateway, 250 ms to the model, first token at 620 ms
    # on the browser, 30 tokens 40 ms apart, stream over at 1,820 ms.
    def browser(self, ms: float) -> float:
        return self.t0 + ms + self.browser_offset_ms

    def server_ns(self, ms: float) -> int:
        return round((self.t0 + ms) * MS)

    def beacon(self, *, sent_after_ms: float = 1850.0) -> dict[str, Any]:
        turn = {
            "type": "turn",
            "id": f"turn-{self.browser_span}",
            "ts": self.browser(1830),
            "trace_id": self.trace_id,
            "span_id": self.browser_span,
            "conversation_id": "conv-golden",
            "turn_index": 0,
            "url": "https://api.example.com/v1/chat/completions",
            "method": "POST",
            "status": 200,
            "t_send": self.browser(0),
            "t_headers": self.browser(300),
            "t_first_token": self.browser(620),
            # A stopped or abandoned answer's last token comes before its end.
            "t_last_token": self.browser(620 + 29 * 40 if self.outcome == "completed" else 900),
            "t_end": self.browser(1820 if self.outcome == "completed" else 900),
            "chunks": 31,
            "tbt_gaps": [40.0] * 29,
            "tbt_summary": {"count": 29, "p50": 40.0, "p95": 41.0, "max": 44.0},
            "output_tokens": 30,
            "tokens_estimated": True,
            "model": "llama-3.1-8b",
            "outcome": self.outcome,
        }
        if self.server_timing:
            # The helper's echo: headers left the gateway at 280 ms (server clock), 240 ms
            # after the request reached it.
            turn["server_timing"] = [
                {"name": "total", "duration": 240.0},
                {"name": "llmrum-now", "description": f"{self.t0 + 280:.3f}"},
            ]
        if self.regenerate_of:
            turn["regenerate_of"] = self.regenerate_of
        return factories.batch(
            [turn], session={"id": self.session}, sent_at=self.browser(sent_after_ms)
        )

    def gateway_request(self) -> bytes:
        server = builders.span(
            trace_id=bytes.fromhex(self.trace_id), span_id=self.gateway_span,
            parent=bytes.fromhex(self.browser_span), name="POST /v1/chat/completions",
            start_ns=self.server_ns(40), duration_ns=1760 * MS,
        )  # fmt: skip
        client = builders.span(
            trace_id=bytes.fromhex(self.trace_id), span_id=self.client_span,
            parent=self.gateway_span, name="chat llama-3.1-8b", kind=3,
            start_ns=self.server_ns(60), duration_ns=1720 * MS,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                        "gen_ai.request.model": "llama-3.1-8b",
                        "gen_ai.usage.input_tokens": 812, "gen_ai.usage.output_tokens": 30},
        )  # fmt: skip
        first = client.events.add(name="first_token", time_unix_nano=self.server_ns(560))
        del first
        return builders.request([server, client], service="chat-gateway").SerializeToString()

    def model_request(self) -> bytes:
        model = builders.span(
            trace_id=bytes.fromhex(self.trace_id), span_id=self.model_span,
            parent=self.client_span, name="llm_request",
            start_ns=self.server_ns(90), duration_ns=1680 * MS,
            attributes={"gen_ai.latency.time_to_first_token": 0.45,
                        "gen_ai.latency.time_in_queue": 0.03,
                        "gen_ai.usage.prompt_tokens": 812, "gen_ai.usage.completion_tokens": 30,
                        "gen_ai.response.model": "meta-llama/Llama-3.1-8B"},
        )  # fmt: skip
        return builders.request([model], service="vllm").SerializeToString()


def send_beacon(client: Client, public_key: str, body: dict[str, Any]) -> None:
    r = client.generic(
        "POST", f"/rum/v1/beacon?key={public_key}", factories.encode(body),
        content_type="text/plain", HTTP_ORIGIN=factories.CHAT_ORIGIN,
    )  # fmt: skip
    assert r.status_code == 202 and not r.json()["rejected"], r.content


def send_otlp(client: Client, token: str, body: bytes) -> None:
    r = client.generic(
        "POST", "/v1/traces", body, content_type="application/x-protobuf",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip
    assert r.status_code == 200 and r.content == b"", r.content


def send_score(token: str, trace_id: str, name: str, value: float, comment: str = "") -> None:
    """POST /api/v1/scores as an evaluator does, with the application's ingest token."""
    r = Client().post(
        "/api/v1/scores", {"trace_id": trace_id, "name": name, "value": value, "comment": comment},
        content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}",
    )  # fmt: skip
    assert r.status_code == 201, r.content
