from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.test import override_settings
from opentelemetry import trace
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmrum_backend import stream

ROOT = Path(__file__).resolve().parents[2]

TRACE_ID = "12345678901234567890123456789012"
PARENT_ID = "1234567890123456"
CHAT_ORIGIN = "https://chat.example.com"
MIDDLEWARE = ["llmrum_django.middleware.TraceContextMiddleware"]
# What DjangoInstrumentor().instrument() puts first in settings.MIDDLEWARE.
OTEL_MIDDLEWARE = (
    "opentelemetry.instrumentation.django.middleware.otel_middleware._DjangoMiddleware"
)
HELPER_SETTINGS = {
    "ROOT_URLCONF": "tests.tracecontext.urls",
    "LLMRUM_CORS_ALLOWED_ORIGINS": [CHAT_ORIGIN],
    "LLMRUM_CORS_URLS_REGEX": r"^/api/",
}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: drives real headless Chromium (/usr/bin/chromium) with Playwright"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class MemorySpans:
    """An SDK tracer provider exporting to memory; the helpers' own span
    (``llmrum.stream``) comes from it too."""

    provider: TracerProvider
    exporter: InMemorySpanExporter

    def finished(self) -> dict[str, Any]:
        return {span.name: span for span in self.exporter.get_finished_spans()}


@pytest.fixture
def memory_spans(monkeypatch: pytest.MonkeyPatch) -> Iterator[MemorySpans]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    # The helpers take the global provider's tracer, which a test process cannot swap.
    tracer: trace.Tracer = provider.get_tracer(stream.TRACER_NAME)
    monkeypatch.setattr(stream, "_tracer", lambda: tracer)
    yield MemorySpans(provider, exporter)
    provider.shutdown()


@pytest.fixture
def instrumented(memory_spans: MemorySpans) -> Iterator[InMemorySpanExporter]:
    """The real opentelemetry-instrumentation-django in front of the helper, exporting
    to memory. ``instrument()`` inserts its middleware into ``settings.MIDDLEWARE`` in
    place, so it runs inside an override holding a copy of the helper's stack (the
    tests using this fixture must not override MIDDLEWARE again)."""
    instrumentor = DjangoInstrumentor()
    with override_settings(MIDDLEWARE=list(MIDDLEWARE), **HELPER_SETTINGS):
        instrumentor.instrument(tracer_provider=memory_spans.provider)
        try:
            # As the README says: its middleware goes first, so its span wraps the helper.
            assert settings.MIDDLEWARE == [OTEL_MIDDLEWARE, *MIDDLEWARE]
            yield memory_spans.exporter
        finally:
            instrumentor.uninstrument()
    assert OTEL_MIDDLEWARE not in MIDDLEWARE


@dataclass
class Callback:
    path: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes


@dataclass
class CallbackServer:
    """Stands in for the W3C harness's callback server: records what arrives."""

    url: str
    received: list[Callback] = field(default_factory=list)

    def take(self) -> list[Callback]:
        taken, self.received[:] = list(self.received), []
        return taken


@pytest.fixture(scope="session")
def _callback_server() -> Iterator[CallbackServer]:
    recorder: list[Callback] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            recorder.append(
                Callback(
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    header_list=list(self.headers.items()),
                    body=body,
                )
            )
            redirect = self.path == "/redirect"
            self.send_response(302 if redirect else 200)
            if redirect:
                self.send_header("Location", "/after-redirect")
            self.send_header("Content-Length", "0" if redirect else "2")
            self.end_headers()
            if not redirect:
                self.wfile.write(b"{}")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server, url = _serve(Handler)
    try:
        yield CallbackServer(url=url, received=recorder)
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def callback_server(_callback_server: CallbackServer) -> Iterator[CallbackServer]:
    _callback_server.take()
    yield _callback_server
    _callback_server.take()


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}"


@dataclass
class Pages:
    """Two origins serving a blank chat page: one on the gateway's allow-list, one not."""

    allowed: str
    foreign: str


@pytest.fixture(scope="session")
def pages() -> Iterator[Pages]:
    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<!doctype html><title>chat</title>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    (allowed, allowed_url), (foreign, foreign_url) = _serve(Page), _serve(Page)
    try:
        yield Pages(allowed=allowed_url, foreign=foreign_url)
    finally:
        for server in (allowed, foreign):
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="session")
def gateway(pages: Pages, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Django gateway using the helper, under gunicorn; returns its base URL."""
    log = tmp_path_factory.mktemp("gateway") / "gunicorn.log"
    with run_gateway(
        "django.core.wsgi:get_wsgi_application()", log, GATEWAY_ALLOWED_ORIGINS=pages.allowed
    ) as url:
        yield url


@contextmanager
def run_gateway(app: str, log: Path, **env: str) -> Iterator[str]:
    """Serve the test gateway (gateway_settings) with gunicorn and one worker; yields its
    base URL."""
    with serve(
        lambda port: [sys.executable, "-m", "gunicorn", app,
                      "--bind", f"127.0.0.1:{port}", "--workers", "1", "--timeout", "30"],
        log,
        DJANGO_SETTINGS_MODULE="tests.tracecontext.gateway_settings",
        **env,
    ) as url:  # fmt: skip
        yield url


@contextmanager
def serve(command: Callable[[int], list[str]], log: Path, **env: str) -> Iterator[str]:
    """Run a server process, ``command(port)`` from the repository root, until it
    answers HTTP; yields its base URL. On leaving, a graceful stop (SIGTERM), killed
    after 15 s. The caller's DJANGO_* and OTEL_* variables are not passed on, only
    ``env``."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "OTEL_"))}
    environ.update(PYTHONUNBUFFERED="1", **env)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command(port), cwd=ROOT, env=environ, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait_until_up("127.0.0.1", port, proc, log)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_until_up(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            connection = http.client.HTTPConnection(host, port, timeout=2)
            connection.request("GET", "/elsewhere")
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"gateway did not start:\n{log.read_text(errors='replace')}")
