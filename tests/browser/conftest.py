"""Real headless Chromium against the live llmrum server: a chat page on one origin
loads the built SDK from llmrum's /static/, and streams answers from an API on
another origin whose timing is known to the millisecond."""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from tests import factories
from tests.chromium import CHROMIUM, launched_chromium
from tests.integration.conftest import start_web  # noqa: F401 (a fixture)
from tests.reports.conftest import Stitched, build_stitched

FIRST_TOKEN_S = 0.300
TOKENS = 30  # after the first one
TOKEN_GAP_S = 0.040


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives real headless Chromium (/usr/bin/chromium) with Playwright"
    )


def sse(obj: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(obj)}\n\n".encode()


def chunk(delta: dict[str, str]) -> bytes:
    return sse({"model": "test-model", "choices": [{"index": 0, "delta": delta}]})


def stream_parts() -> list[tuple[float, bytes]]:
    """(seconds after the request, bytes): OpenAI SSE, the first token at 300 ms,
    then 30 tokens 40 ms apart, then usage and [DONE]."""
    parts = [(0.0, chunk({"role": "assistant"}))]
    parts += [
        (FIRST_TOKEN_S + i * TOKEN_GAP_S, chunk({"content": f"t{i} "})) for i in range(TOKENS + 1)
    ]
    end = FIRST_TOKEN_S + TOKENS * TOKEN_GAP_S
    usage = {"prompt_tokens": 7, "completion_tokens": TOKENS + 1, "total_tokens": TOKENS + 8}
    parts += [
        (end, sse({"model": "test-model", "choices": [], "usage": usage})),
        (end, b"data: [DONE]\n\n"),
    ]
    return parts


STREAM_BODY = b"".join(part for _, part in stream_parts())


@dataclass
class ChatApi:
    """An OpenAI-style streaming endpoint that records the headers it was sent."""

    url: str
    allow_trace_headers: bool
    requests: list[dict[str, str]] = field(default_factory=list)


def _serve(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _chat_api(allow_trace_headers: bool) -> tuple[ThreadingHTTPServer, ChatApi]:
    api = ChatApi(url="", allow_trace_headers=allow_trace_headers)

    class Handler(BaseHTTPRequestHandler):
        def setup(self) -> None:
            super().setup()
            # Without it Nagle's algorithm holds small writes back and blurs the gaps.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _cors(self) -> None:
            origin = self.headers.get("Origin", "*")
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Timing-Allow-Origin", origin)
            self.send_header("Access-Control-Expose-Headers", "Server-Timing")

        def do_OPTIONS(self) -> None:
            self.send_response(204)
            self._cors()
            self.send_header("Access-Control-Allow-Methods", "POST")
            # The non-target API refuses trace headers: leaking them would fail the chat.
            allowed = (
                "traceparent, baggage, content-type" if api.allow_trace_headers else "content-type"
            )
            self.send_header("Access-Control-Allow-Headers", allowed)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            api.requests.append({k.lower(): v for k, v in self.headers.items()})
            start = time.monotonic()
            self.send_response(200)
            self._cors()
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Server-Timing", f"llmrum-now;desc={time.time() * 1000:.3f}")
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                for at, part in stream_parts():
                    # Absolute deadlines, so sleep overshoots do not add up.
                    time.sleep(max(0.0, start + at - time.monotonic()))
                    self.wfile.write(part)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page stopped the answer

        # EventSource can only GET: the same stream, and no trace headers to record.
        do_GET = do_POST

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _serve(Handler)
    api.url = f"http://127.0.0.1:{server.server_port}"
    return server, api


@pytest.fixture(scope="session")
def chat_api() -> Iterator[ChatApi]:
    server, api = _chat_api(allow_trace_headers=True)
    yield api
    server.shutdown()


@pytest.fixture(scope="session")
def other_api() -> Iterator[ChatApi]:
    server, api = _chat_api(allow_trace_headers=False)
    yield api
    server.shutdown()


@dataclass
class PageServer:
    """The chat app's origin: serves the HTML each test puts at a path."""

    origin: str
    html: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    pages = PageServer(origin="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.html.get(
                self.path.split("?")[0], "<!doctype html><title>away</title>"
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _serve(Handler)
    pages.origin = f"http://127.0.0.1:{server.server_port}"
    yield pages
    server.shutdown()


# Module scope, not session: the loop Playwright runs on this thread must be gone
# before other modules' async tests (and their own Playwright) run.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    # Playwright's sync API keeps an asyncio loop running on this thread; the ORM calls
    # the tests make here are plain synchronous ones, which Django would refuse then.
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with launched_chromium(sync_api) as browser:
            yield browser
    finally:
        if previous is None:
            del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@dataclass
class FlakyProxy:
    """Stands in front of the live llmrum server and can fail on demand: while `down`,
    the first request it gets is answered 500 and the later ones have their connection
    closed unanswered (a server gone away); otherwise it forwards, CORS headers included.
    Every beacon it sees is logged with when it came, what became of it and its events."""

    url: str = ""
    upstream: str = ""
    down: bool = True
    log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def failures(self) -> list[dict[str, Any]]:
        with self.lock:
            return [entry for entry in self.log if entry["outcome"] in ("500", "closed")]

    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [entry for entry in self.log if entry["outcome"] == 202]


@pytest.fixture
def flaky_proxy(live_server: Any) -> Iterator[FlakyProxy]:
    proxy = FlakyProxy(upstream=live_server.url)
    passed = ("Content-Type", "Vary", "Retry-After")

    class Handler(BaseHTTPRequestHandler):
        def _forward(self, body: bytes | None) -> int:
            target = urllib.parse.urlsplit(proxy.upstream)
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            try:
                headers = {
                    key: value
                    for key, value in self.headers.items()
                    if key.lower() not in ("host", "connection", "content-length")
                }
                conn.request(self.command, self.path, body=body, headers=headers)
                upstream = conn.getresponse()
                payload = upstream.read()
                self.send_response(upstream.status)
                for key, value in upstream.getheaders():
                    if key.lower().startswith("access-control-") or key in passed:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return upstream.status
            finally:
                conn.close()

        def do_OPTIONS(self) -> None:
            self._forward(None)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                events = json.loads(body).get("events", [])
            except ValueError:
                events = []
            entry: dict[str, Any] = {
                "at": time.monotonic(),
                "ids": [event.get("id") for event in events],
                "types": [event.get("type") for event in events],
            }
            with proxy.lock:
                failing = proxy.down
                first_failure = not any(e["outcome"] in ("500", "closed") for e in proxy.log)
            if failing and first_failure:
                entry["outcome"] = "500"
                self.send_response(500)
                # With CORS headers, so the SDK sees the status (not just a network error).
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin", "*"))
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", "5")
                self.end_headers()
                self.wfile.write(b"oops\n")
            elif failing:
                entry["outcome"] = "closed"
                self.close_connection = True  # nothing written: the browser gets an empty reply
            else:
                entry["outcome"] = self._forward(body)
            with proxy.lock:
                proxy.log.append(entry)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = _serve(Handler)
    proxy.url = f"http://127.0.0.1:{server.server_port}"
    yield proxy
    server.shutdown()


# --- the report pages' browser tests (test_reports, test_search_sessions) ------------


@pytest.fixture
def stitched(live_server: Any, transactional_db: Any) -> Stitched:
    return build_stitched(Client(), factories.make_app("Reports"))


@pytest.fixture
def reports(browser: Any, live_server: Any) -> Iterator[Any]:
    """A page that records any dialog and page error (there must be none)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.dialogs = []
    page.errors = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    # Anything the Content-Security-Policy refused (an inline style or script) shows here.
    page.on(
        "console",
        lambda message: page.errors.append(message.text)
        if "Content Security Policy" in message.text
        else None,
    )
    yield page
    context.close()
