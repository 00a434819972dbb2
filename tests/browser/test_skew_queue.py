"""A request held in a server queue must not bend the clock skew (DESIGN.md §10.3).

Real headless Chromium runs the SDK on a chat page; the chat API is a real gateway
(Django behind llmrum_django under gunicorn, or FastAPI behind llmrum_asgi under
uvicorn) calling a streaming OpenAI-compatible server, exporting its spans to llmrum.
A proxy in front of the gateway holds the session's second request 1.5 s before the
gateway sees it, as a queue in front of a busy worker does. Everything runs on one
machine, so the true skew is 0: both turns must be stitched within 20 ms of it, though
the held turn's own Server-Timing sample alone is off by about 750 ms.
"""

from __future__ import annotations

import io
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections

from correlator.models import Trace
from correlator.stitch.load import load_clock_samples
from correlator.stitch.rules import server_timing_sample
from rumserver.models import BrowserEvent
from tests import factories
from tests.backend.fake_openai import fake_openai
from tests.backend.test_server_ttft import GATEWAYS
from tests.chromium import chromium_missing, launched_chromium
from tests.integration.conftest import free_port
from tests.tracecontext.linking import exporting_to, wait_for_spans

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(chromium_missing(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]

HOLD_MS = 1500
TRUTH_TOLERANCE_MS = 20.0
_HOLD = re.compile(rb"[?&]hold=(\d+)")

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>chat</title>
<script src="{llmrum}/static/llmrum/llmrum.min.js"></script>
<script>
llmrum.init({{endpoint: "{llmrum}", key: "{key}", chatUrls: [/\\/api\\//], flushInterval: 200}});
async function turn(path) {{
  const response = await fetch(path, {{method: "POST", headers: {{"content-type":
    "application/json"}}, body: JSON.stringify({{messages: [{{role: "user", content: "hi"}}]}})}});
  const reader = response.body.getReader();
  while (!(await reader.read()).done) {{}}
  return response.status;
}}
window.chat = async (path) => {{
  const statuses = [await turn(path), await turn(path + "?hold={hold}")];
  await new Promise((r) => setTimeout(r, 100));
  llmrum.flush();
  return statuses;
}};
</script></head><body>chat</body></html>"""


class HoldingProxy:
    """A TCP proxy in front of a gateway: it answers ``GET /page`` itself (so the page
    and the chat API share one origin) and relays everything else byte for byte,
    holding a request whose line carries ``hold=<ms>`` that long before the gateway
    sees any of it."""

    def __init__(self, upstream_port: int, page: str, *, port: int) -> None:
        self.upstream_port, self.page, self.port = upstream_port, page, port
        self.held: list[float] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        first = client.recv(65536)
        if first.startswith(b"GET /page "):
            body = self.page.encode()
            client.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            client.close()
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
        self._pipe(client, upstream, first)

    def _pipe(self, source: socket.socket, sink: socket.socket, data: bytes = b"") -> None:
        try:
            while True:
                if not data:
                    data = source.recv(65536)
                    if not data:
                        break
                if match := _HOLD.search(data):
                    self.held.append(time.time())
                    time.sleep(int(match.group(1)) / 1000)
                sink.sendall(data)
                data = b""
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.mark.parametrize("name", GATEWAYS)
def test_a_request_held_in_a_queue_does_not_move_the_browser_span(
    name: str, start_web: Callable[..., str], tmp_path: Path
) -> None:
    from playwright import sync_api

    path = GATEWAYS[name].path
    llmrum = start_web()
    with holding_proxy_for(name, llmrum, tmp_path) as (proxy, gateway_log):
        with launched_chromium(sync_api) as browser:
            page = browser.new_page()
            page.goto(f"{proxy.origin}/page")
            statuses = page.evaluate("(path) => window.chat(path)", path)
            assert statuses == [200, 200], gateway_log.read_text(errors="replace")[-3000:]
            # Playwright's loop runs in this thread, and Django's ORM refuses it.
            with ThreadPoolExecutor(1) as pool:
                turns = sorted(pool.submit(_stored_turns, 2).result(), key=lambda e: e.ts_ms)
        assert len(proxy.held) == 1
    # Leaving stopped the gateway gracefully: its spans are exported.
    quick, held = turns
    alone = server_timing_sample(held.data)
    assert alone is not None, held.data  # the gateway's Server-Timing echo reached the SDK
    # NTP's midpoint of that sample alone is hundreds of ms off (about half the hold,
    # less where the headers left with the first token, after t2).
    assert (alone.lo + alone.hi) / 2 > 400, alone

    for event in (quick, held):
        wait_for_spans(event.trace_id, 2, gateway_log)
    call_command("stitch", "--finalize-all", stdout=io.StringIO())
    for event in (quick, held):
        trace = Trace.objects.get(trace_id=event.trace_id)
        assert trace.skew_source.startswith("server_timing"), trace.skew_source
        samples = load_clock_samples({event.session_id})
        assert abs(trace.clock_skew_ms) <= TRUTH_TOLERANCE_MS, (trace.clock_skew_ms, samples)
        assert trace.clock_skew_uncertainty_ms is not None
        assert trace.clock_skew_uncertainty_ms < HOLD_MS / 2


def _stored_turns(count: int, timeout: float = 15.0) -> list[BrowserEvent]:
    """Run in a thread of its own: its database connection is closed before it ends."""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            turns = list(BrowserEvent.objects.filter(type="turn"))
            if len(turns) >= count:
                return turns
            time.sleep(0.2)
        raise AssertionError(f"{count} turns not stored: {BrowserEvent.objects.count()} events")
    finally:
        connections.close_all()


@contextmanager
def holding_proxy_for(
    name: str, llmrum: str, tmp_path: Path
) -> Iterator[tuple[HoldingProxy, Path]]:
    """The gateway, exporting to llmrum with a new application's token, behind a
    holding proxy whose origin the application allows; yields (proxy, gateway log)."""
    log = tmp_path / f"{name}-gateway.log"
    port = free_port()  # the proxy's: the application must allow its origin
    app = factories.make_app(origins=[f"http://127.0.0.1:{port}"])
    page = PAGE.format(llmrum=llmrum, key=app.application.public_key, hold=HOLD_MS)
    with (
        fake_openai() as model_url,
        GATEWAYS[name].start(
            log,
            GATEWAY_OPENAI_BASE_URL=model_url,
            **exporting_to(llmrum, app.ingest_token, f"{name}-gateway"),
        ) as url,
    ):
        proxy = HoldingProxy(int(url.rsplit(":", 1)[1]), page, port=port)
        try:
            yield proxy, log
        finally:
            proxy.close()
