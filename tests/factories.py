"""Builders for applications and beacon payloads, plus a few named actors."""

from __future__ import annotations

import gzip
import itertools
import json
import secrets
import time
from typing import Any

from rumserver.applications import CreatedApplication, application_create

CHAT_ORIGIN = "https://chat.example.com"
CHROME_UA = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)
IPHONE_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT_UA = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

_seq = itertools.count(1)


def make_app(name: str = "Chat", origins: list[str] | None = None) -> CreatedApplication:
    return application_create(
        name=f"{name} {next(_seq)}", origins=[CHAT_ORIGIN] if origins is None else origins
    )


def now_ms() -> float:
    return time.time() * 1000


def trace_id() -> str:
    return secrets.token_hex(16)


def span_id() -> str:
    return secrets.token_hex(8)


def turn_event(**overrides: Any) -> dict[str, Any]:
    t = now_ms() - 5000
    event = {
        "type": "turn",
        "id": f"evt-{secrets.token_hex(8)}",
        "ts": t + 4000,
        "trace_id": trace_id(),
        "span_id": span_id(),
        "conversation_id": "conv-1",
        "turn_index": 0,
        "url": "https://chat.example.com/api/chat",
        "method": "POST",
        "status": 200,
        "t_send": t,
        "t_headers": t + 180.5,
        "t_first_token": t + 420.25,
        "t_last_token": t + 3900,
        "t_end": t + 3950,
        "chunks": 57,
        "tbt_gaps": [55.5, 61.0, 70.2, 58.0],
        "tbt_summary": {"count": 56, "p50": 60.0, "p95": 110.0, "max": 240.0},
        "output_tokens": 58,
        "tokens_estimated": False,
        "model": "gpt-4o-mini",
        "usage": {"input_tokens": 812, "output_tokens": 58},
        "server_timing": [{"name": "trace", "description": "00-abc-def-01"}],
        "outcome": "completed",
        "intent_correction": False,
    }
    event.update(overrides)
    return event


def action_event(name: str = "stop", **overrides: Any) -> dict[str, Any]:
    event = {
        "type": "action",
        "id": f"evt-{secrets.token_hex(8)}",
        "ts": now_ms(),
        "name": name,
        "turn_span_id": span_id(),
    }
    event.update(overrides)
    return event


def batch(events: list[dict[str, Any]] | None = None, **overrides: Any) -> dict[str, Any]:
    body = {
        "v": 1,
        "sdk": {"name": "llmrum", "version": "0.1.0"},
        "sent_at": now_ms(),
        "session": {"id": "sess-alice", "started_at": now_ms() - 60_000},
        "page": {"url": "https://chat.example.com/c/1", "referrer": ""},
        "user": {"id": "user-alice"},
        "events": [turn_event()] if events is None else events,
    }
    body.update(overrides)
    return body


def encode(body: Any) -> bytes:
    return json.dumps(body).encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data)
