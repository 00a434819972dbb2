"""What the test gateways (Django under gunicorn, FastAPI under uvicorn) share: the
model call through the OpenAI SDK, and the gateway's own record of when it handed on
its first answer chunk, sent at the end of the stream so the test can compare
llmrum's server TTFT with it."""

from __future__ import annotations

import json
import os
import time
from typing import Any

MODEL = "gpt-4o-mini"


def openai_settings() -> dict[str, Any]:
    """Client options: the fake OpenAI-compatible server the test started."""
    return {
        "base_url": os.environ["GATEWAY_OPENAI_BASE_URL"],
        "api_key": "sk-test",
        "max_retries": 0,
    }


def create_arguments(body: bytes) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": json.loads(body)["messages"],
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def content_of(chunk: Any) -> str:
    return (chunk.choices[0].delta.content or "") if chunk.choices else ""


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data)}\n\n"


class FirstByte:
    """``event()`` is called right before the gateway yields each answer chunk."""

    def __init__(self) -> None:
        self.ns: int | None = None

    def event(self, content: str) -> str:
        if self.ns is None:
            self.ns = time.time_ns()
        return sse({"delta": content})

    def closing(self) -> list[str]:
        return [sse({"first_byte_ns": self.ns}), "data: [DONE]\n\n"]
