"""A local OpenAI-compatible chat server that streams: ``POST /v1/chat/completions``
with ``stream: true`` answers ``chat.completion.chunk`` events over SSE, as OpenAI and
vLLM do (a role chunk with empty content first, then the words, a finish chunk, the
usage chunk when asked, ``[DONE]``), in HTTP/1.1 chunked encoding with a pause before
the first word like a model's time to first token."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ["Hello", " from", " the", " model", "."]
FIRST_TOKEN_SECONDS = 0.2
BETWEEN_TOKENS_SECONDS = 0.02


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
        if self.path != "/v1/chat/completions" or not request.get("stream"):
            self.send_error(400, "streaming chat completions only")
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        model = request["model"]
        self._event(_chunk(model, {"role": "assistant", "content": ""}))
        time.sleep(FIRST_TOKEN_SECONDS)
        for word in WORDS:
            self._event(_chunk(model, {"content": word}))
            time.sleep(BETWEEN_TOKENS_SECONDS)
        self._event(_chunk(model, {}, finish_reason="stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            usage = {
                "prompt_tokens": 9,
                "completion_tokens": len(WORDS),
                "total_tokens": 9 + len(WORDS),
            }
            self._event({**_chunk(model, {}), "choices": [], "usage": usage})
        self._write(b"data: [DONE]\n\n")
        self._write(b"")  # the last chunk of the chunked encoding

    def _event(self, data: dict[str, Any]) -> None:
        self._write(f"data: {json.dumps(data)}\n\n".encode())

    def _write(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


def _chunk(model: str, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-llmrum-test",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


@contextmanager
def fake_openai() -> Iterator[str]:
    """Serves on a free port of 127.0.0.1; yields the base URL the SDK takes (``…/v1``)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/v1"
    finally:
        server.shutdown()
        server.server_close()
