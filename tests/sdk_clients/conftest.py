"""The chat clients pages stream with, from npm (pinned in this folder's package.json,
installed by `npm ci` from its lockfile, again only when the lockfile changed), bundled
with esbuild for the page; and a server that streams each client's wire format. Without
node or npm these tests skip and say why."""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.browser.conftest import (  # noqa: F401 (a fixture, the browser marker)
    browser,
    pytest_configure,
)
from tests.clients.conftest import npm_installed

HERE = Path(__file__).resolve().parent
FIRST_TOKEN_S = 0.300
TOKEN_GAP_S = 0.040
TOKENS = [f"t{i} " for i in range(12)]  # each under 4 characters and a bit: one token each
USAGE = {"input_tokens": 9, "output_tokens": len(TOKENS)}


@pytest.fixture(scope="session")
def clients_bundle() -> str:
    """openai, @anthropic-ai/sdk and ai for the browser: window.chatClients."""
    npm_installed((HERE,), "the chat clients")
    with tempfile.TemporaryDirectory() as out:
        bundle = Path(out) / "clients.js"
        done = subprocess.run(
            [str(HERE / "node_modules" / ".bin" / "esbuild"), "page_clients.js", "--bundle",
             "--format=iife", "--platform=browser", "--target=chrome120", "--log-level=warning",
             f"--outfile={bundle}"],
            cwd=HERE, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return bundle.read_text()


def _sse(data: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def openai_stream(include_usage: bool) -> list[tuple[float, bytes]]:
    """A chat completion stream as OpenAI's API sends it: (seconds after the request, bytes)."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1700000000}
    base |= {"model": "gpt-test", "system_fingerprint": "fp_test"}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return _sse(base | {"choices": [choice]})

    parts = [(0.0, chunk({"role": "assistant", "content": "", "refusal": None}))]
    parts += [
        (FIRST_TOKEN_S + i * TOKEN_GAP_S, chunk({"content": t})) for i, t in enumerate(TOKENS)
    ]
    end = FIRST_TOKEN_S + len(TOKENS) * TOKEN_GAP_S
    parts.append((end, chunk({}, "stop")))
    if include_usage:
        usage = {"prompt_tokens": USAGE["input_tokens"], "completion_tokens": len(TOKENS)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        parts.append((end, _sse(base | {"choices": [], "usage": usage})))
    return [*parts, (end, b"data: [DONE]\n\n")]


def anthropic_stream() -> list[tuple[float, bytes]]:
    """A Messages API stream as Anthropic's API sends it; message_start's usage carries
    output_tokens 1, a placeholder that message_delta replaces."""
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-test"}
    message |= {"content": [], "stop_reason": None, "stop_sequence": None}
    message["usage"] = {"input_tokens": USAGE["input_tokens"], "output_tokens": 1}
    parts = [
        (0.0, _sse({"type": "message_start", "message": message}, "message_start")),
        (0.0, _sse({"type": "content_block_start", "index": 0,
                    "content_block": {"type": "text", "text": ""}}, "content_block_start")),
        (0.0, _sse({"type": "ping"}, "ping")),
    ]  # fmt: skip
    parts += [
        (FIRST_TOKEN_S + i * TOKEN_GAP_S,
         _sse({"type": "content_block_delta", "index": 0,
               "delta": {"type": "text_delta", "text": t}}, "content_block_delta"))
        for i, t in enumerate(TOKENS)
    ]  # fmt: skip
    end = FIRST_TOKEN_S + len(TOKENS) * TOKEN_GAP_S
    return parts + [
        (end, _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")),
        (end, _sse({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": len(TOKENS)}}, "message_delta")),
        (end, _sse({"type": "message_stop"}, "message_stop")),
    ]  # fmt: skip


def ai_stream() -> list[tuple[float, bytes]]:
    """A UI message stream as the AI SDK's toUIMessageStreamResponse() sends it: no model,
    no usage."""
    parts = [(0.0, _sse(p)) for p in ({"type": "start"}, {"type": "start-step"},
                                       {"type": "text-start", "id": "0"})]  # fmt: skip
    parts += [
        (FIRST_TOKEN_S + i * TOKEN_GAP_S, _sse({"type": "text-delta", "id": "0", "delta": t}))
        for i, t in enumerate(TOKENS)
    ]
    end = FIRST_TOKEN_S + len(TOKENS) * TOKEN_GAP_S
    closing = ({"type": "text-end", "id": "0"}, {"type": "finish-step"},
               {"type": "finish", "finishReason": "stop"})  # fmt: skip
    return [*parts, *((end, _sse(p)) for p in closing), (end, b"data: [DONE]\n\n")]


@dataclass
class ChatSite:
    """One origin serving the chat page, the clients' bundle and the three APIs."""

    origin: str = ""
    html: dict[str, str] = field(default_factory=dict)
    bundle: str = ""
    requests: list[dict[str, str]] = field(default_factory=list)


@pytest.fixture
def chat_site(clients_bundle: str) -> Iterator[ChatSite]:
    site = ChatSite(bundle=clients_bundle)

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            super().setup()
            # Without it Nagle's algorithm holds small writes back and blurs the times.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            if self.path == "/clients.js":
                self._send(site.bundle.encode(), "text/javascript")
            else:
                self._send(site.html.get(self.path, "").encode(), "text/html; charset=utf-8")

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            site.requests.append({k.lower(): v for k, v in self.headers.items()})
            if self.path == "/v1/chat/completions":
                parts = openai_stream(bool(body.get("stream_options", {}).get("include_usage")))
                extra = {}
            elif self.path == "/v1/messages":
                parts, extra = anthropic_stream(), {"request-id": "req_1"}
            else:
                parts, extra = ai_stream(), {"x-vercel-ai-ui-message-stream": "v1"}
            start = time.monotonic()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            for key, value in extra.items():
                self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for at, part in parts:
                    # Absolute deadlines, so sleep overshoots do not add up.
                    time.sleep(max(0.0, start + at - time.monotonic()))
                    self.wfile.write(part)
                    self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page stopped the answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    site.origin = f"http://127.0.0.1:{server.server_port}"
    yield site
    server.shutdown()
