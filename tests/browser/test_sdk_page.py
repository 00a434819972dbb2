"""The built SDK in real headless Chromium, beyond fetch and EventSource: XHR and
WebSocket turns, actions by markup, page views of a single-page app, uncaught errors,
Web Vitals and what is reported while the page goes away, opt-in chat text, and the
bundle loaded cross-origin with SRI. Each stores what the page did in the live server."""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import statistics
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from rumserver.models import BrowserEvent
from tests import factories
from tests.browser.conftest import (
    CHROMIUM,
    FIRST_TOKEN_S,
    TOKEN_GAP_S,
    TOKENS,
    ChatApi,
    PageServer,
)
from tests.chromium import close_quietly, new_context

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]

BUNDLE = (
    Path(__file__).resolve().parents[2] / "frontend_sdk" / "static" / "llmrum" / "llmrum.min.js"
)

# The page's own measurement, taken where the SDK takes its own (see test_sdk.py).
PAGE_JS = """
const now = () => performance.timeOrigin + performance.now();
window.runChat = async (url, body = "{}") => {
  window.chatAbort = new AbortController();
  const res = await fetch(url, {method: "POST", headers: {"content-type": "application/json"},
                               body, signal: window.chatAbort.signal});
  window.firstToken = new Promise((resolve) => (window.gotFirstToken = resolve));
  try {
    const reader = res.body.getReader();
    for (;;) {
      const {done, value} = await reader.read();
      if (done) return "completed";
      if (new TextDecoder().decode(value).includes('"content"')) window.gotFirstToken();
    }
  } catch (error) {
    return error.name;
  }
};

window.runXhr = (url, body) => new Promise((resolve) => {
  const xhr = new XMLHttpRequest();
  let t0 = null, first = null;
  xhr.open("POST", url);
  xhr.setRequestHeader("content-type", "application/json");
  xhr.onreadystatechange = () => {
    if (xhr.readyState >= 3 && first === null && xhr.responseText.includes('"content"')) first = now();
    if (xhr.readyState === 4) resolve({t0, first, text: xhr.responseText, status: xhr.status});
  };
  t0 = now();  // where the SDK takes t_send: at send()
  xhr.send(body);
});

window.runSocket = (url, prompt) => new Promise((resolve) => {
  const ws = new WebSocket(url);
  const data = [], gaps = [];
  let t0 = null, first = null, last = null;
  ws.onopen = () => { t0 = now(); ws.send(prompt); };
  ws.onmessage = (e) => {
    const t = now();
    data.push(e.data);
    if (e.data.includes('"done"')) { resolve({t0, first, gaps, data}); return; }
    if (e.data.includes('"content"')) {
      if (first === null) first = t; else gaps.push(t - last);
      last = t;
    }
  };
  ws.onerror = () => resolve({error: true});
});
"""


ADDONS = ("eventsource", "websocket", "text")


def sdk_page(
    live_url: str,
    key: str,
    *,
    options: str = "",
    body: str = "",
    head: str = "",
    addons: tuple[str, ...] = ADDONS,
) -> str:
    """A page with the built SDK, the add-on files after it (all by default), and PAGE_JS;
    `options` is more of llmrum.init's object literal (JavaScript: RegExps and functions
    allowed)."""
    files = "".join(
        f'<script src="{live_url}/static/llmrum/llmrum.{name}.min.js"></script>' for name in addons
    )
    return f"""<!doctype html><title>chat</title>
{head}<script src="{live_url}/static/llmrum/llmrum.min.js"></script>{files}
<script>llmrum.init({{endpoint: {json.dumps(live_url)}, key: {json.dumps(key)},
  flushInterval: 200, chatUrls: [/\\/v1\\/chat\\/completions/], {options}}});</script>
<script>{PAGE_JS}</script>
<body>{body}</body>"""


@pytest.fixture
def app(live_server: Any, page_server: PageServer) -> Any:
    return factories.make_app(origins=[page_server.origin]).application


@dataclass
class Tab:
    page: Any
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = new_context(browser)
    page = context.new_page()
    page.set_default_timeout(15_000)
    tab = Tab(page)
    page.on("pageerror", lambda error: tab.errors.append(str(error)))
    yield tab
    close_quietly(context)


def stored(app: Any, kind: str, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The data of the stored events of one type, oldest first, once there are `count`."""
    deadline = time.monotonic() + timeout
    while True:
        rows = [r.data for r in BrowserEvent.objects.filter(app=app, type=kind).order_by("ts_ms")]
        if len(rows) >= count or time.monotonic() > deadline:
            assert len(rows) >= count, f"expected {count} {kind} event(s), got {rows}"
            return rows
        time.sleep(0.1)


def open_page(tab: Tab, page_server: PageServer, path: str, html: str) -> Any:
    page_server.html[path] = html
    tab.page.goto(f"{page_server.origin}{path}")
    return tab.page


# --- XMLHttpRequest -------------------------------------------------------------


def test_an_xhr_stream_is_stored_as_the_page_saw_it(
    tab: Tab, live_server: Any, page_server: PageServer, chat_api: ChatApi, app: Any
) -> None:
    html = sdk_page(
        live_server.url, app.public_key, options=f"tracePropagationTargets: ['{chat_api.url}']"
    )
    page = open_page(tab, page_server, "/xhr", html)
    chat_api.requests.clear()
    seen = page.evaluate("([u, b]) => runXhr(u, b)", [f"{chat_api.url}/v1/chat/completions", "{}"])
    assert seen["status"] == 200
    assert '"content": "t30 "' in seen["text"]

    (turn,) = stored(app, "turn")
    assert (turn["outcome"], turn["status"], turn["method"]) == ("completed", 200, "POST")
    # Both read responseText at the same readystatechange events.
    page_ttft = seen["first"] - seen["t0"]
    assert abs((turn["t_first_token"] - turn["t_send"]) - page_ttft) <= 15, (turn, page_ttft)
    assert turn["t_first_token"] - turn["t_send"] >= FIRST_TOKEN_S * 1000 - 5
    assert (turn["model"], turn["output_tokens"], turn["tokens_estimated"]) == (
        "test-model",
        TOKENS + 1,
        False,
    )
    # Chromium throttles XHR progress (about every 50 ms), so some gaps join and the
    # first token may be seen up to a throttle period or two late; the rest of the
    # stream is still measured.
    assert turn["tbt_summary"]["count"] >= 5
    assert turn["t_last_token"] - turn["t_first_token"] >= TOKENS * TOKEN_GAP_S * 1000 - 150
    (request,) = chat_api.requests
    assert request["traceparent"] == f"00-{turn['trace_id']}-{turn['span_id']}-01"
    assert not tab.errors, tab.errors


# --- Opt-in chat text -----------------------------------------------------------

PROMPT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "system secret"},
        {"role": "user", "content": "call me at 555-0100"},
    ],
}


def test_chat_text_leaves_only_through_the_redact_hook_when_opted_in(
    tab: Tab, live_server: Any, page_server: PageServer, chat_api: ChatApi, app: Any
) -> None:
    redact = "(text, kind) => kind + ': ' + text.replace(/\\d{3}-\\d{4}/g, '[phone]')"
    html = sdk_page(live_server.url, app.public_key, options=f"captureText: true, redact: {redact}")
    page = open_page(tab, page_server, "/text", html)
    url = f"{chat_api.url}/v1/chat/completions"
    page.evaluate("([u, b]) => runXhr(u, b)", [url, json.dumps(PROMPT)])
    (turn,) = stored(app, "turn")
    assert turn["prompt_text"] == "prompt: call me at [phone]"
    assert turn["answer_text"] == "answer: " + "".join(f"t{i} " for i in range(TOKENS + 1))

    # The same page without the option: nothing of the text is stored.
    html = sdk_page(live_server.url, app.public_key, options=f"redact: {redact}")
    page = open_page(tab, page_server, "/no-text", html)
    assert page.evaluate("([u, b]) => runChat(u, b)", [url, json.dumps(PROMPT)]) == "completed"
    _, plain = stored(app, "turn", 2)
    assert "prompt_text" not in plain or plain["prompt_text"] is None
    assert "answer_text" not in plain or plain["answer_text"] is None
    # Opted in, but without the text add-on (llmrum.text.min.js): nothing either.
    html = sdk_page(
        live_server.url,
        app.public_key,
        options=f"captureText: true, redact: {redact}",
        addons=("eventsource", "websocket"),
    )
    page = open_page(tab, page_server, "/core-only", html)
    assert page.evaluate("([u, b]) => runChat(u, b)", [url, json.dumps(PROMPT)]) == "completed"
    _, _, core_only = stored(app, "turn", 3)
    assert core_only.get("prompt_text") is None and core_only.get("answer_text") is None
    everything = json.dumps([r.data for r in BrowserEvent.objects.filter(app=app)])
    assert "555-0100" not in everything
    assert "system secret" not in everything
    assert not tab.errors, tab.errors


def test_a_redact_hook_that_throws_sends_no_text_and_breaks_nothing(
    tab: Tab, live_server: Any, page_server: PageServer, chat_api: ChatApi, app: Any
) -> None:
    redact = "() => { throw new Error('redactor down'); }"
    html = sdk_page(live_server.url, app.public_key, options=f"captureText: true, redact: {redact}")
    page = open_page(tab, page_server, "/throws", html)
    url = f"{chat_api.url}/v1/chat/completions"
    assert page.evaluate("([u, b]) => runChat(u, b)", [url, json.dumps(PROMPT)]) == "completed"
    (turn,) = stored(app, "turn")
    assert turn["outcome"] == "completed"
    assert turn.get("prompt_text") is None
    assert turn.get("answer_text") is None
    assert not tab.errors, tab.errors  # nothing thrown into the page
    assert not BrowserEvent.objects.filter(app=app, type="error").exists()


# --- Actions by markup ----------------------------------------------------------

BUTTONS = """
<div data-llmrum-turn="" id="answer">
  <button data-llmrum="copy" id="copy">Copy</button>
  <button data-llmrum="feedback-up" id="up"><span id="up-icon">+</span></button>
  <button data-llmrum="feedback-down" id="down">-</button>
</div>
<button data-llmrum="regenerate" id="regenerate">Regenerate</button>
<button data-llmrum="edit" id="edit">Edit</button>
<button data-llmrum="stop" id="stop" onclick="window.chatAbort.abort()">Stop</button>
"""


def test_markup_actions_become_events_and_shape_the_next_turns(
    tab: Tab, live_server: Any, page_server: PageServer, chat_api: ChatApi, app: Any
) -> None:
    page = open_page(
        tab, page_server, "/actions", sdk_page(live_server.url, app.public_key, body=BUTTONS)
    )
    url = f"{chat_api.url}/v1/chat/completions"
    assert page.evaluate("u => runChat(u)", url) == "completed"
    (first,) = stored(app, "turn")
    # Tie the answer's buttons to its turn, as an app renders them.
    page.evaluate("s => answer.setAttribute('data-llmrum-turn', s)", first["span_id"])
    page.click("#copy")
    page.click("#up-icon")  # a click inside the button counts
    page.click("#down")

    page.click("#regenerate")
    assert page.evaluate("u => runChat(u)", url) == "completed"
    page.click("#edit")
    assert page.evaluate("u => runChat(u)", url) == "completed"

    # Stop while the answer streams: the page aborts, the SDK knows it was the user.
    page.evaluate("u => { window.stopped = runChat(u); }", url)
    page.wait_for_function("window.firstToken !== undefined")
    page.evaluate("window.firstToken")
    page.click("#stop")
    assert page.evaluate("window.stopped") == "AbortError"

    turns = stored(app, "turn", 4)
    _, regenerated, edited, stopped = turns
    assert regenerated["regenerate_of"] == first["span_id"]
    assert not regenerated["intent_correction"]
    assert edited["intent_correction"] is True
    assert edited["regenerate_of"] is None
    assert stopped["outcome"] == "stopped"
    assert stopped["regenerate_of"] is None
    assert not stopped["intent_correction"]

    actions = stored(app, "action", 4)
    by_name = {a["name"]: a for a in actions}
    assert sorted(by_name) == ["copy", "edit", "regenerate", "stop"]
    assert by_name["copy"]["turn_span_id"] == first["span_id"]
    assert by_name["regenerate"]["turn_span_id"] == first["span_id"]  # the last turn
    assert by_name["edit"]["turn_span_id"] == regenerated["span_id"]
    assert by_name["stop"]["turn_span_id"] == stopped["span_id"]
    # Each names its turn's trace too, so the server re-stitches that trace.
    assert by_name["copy"]["trace_id"] == first["trace_id"]
    assert by_name["edit"]["trace_id"] == regenerated["trace_id"]
    feedback = stored(app, "feedback", 2)
    assert [(f["value"], f["turn_span_id"], f["trace_id"]) for f in feedback] == [
        ("up", first["span_id"], first["trace_id"]),
        ("down", first["span_id"], first["trace_id"]),
    ]
    assert not tab.errors, tab.errors


# --- Page views, errors --------------------------------------------------------


def test_page_views_follow_single_page_app_routes(
    tab: Tab, live_server: Any, page_server: PageServer, app: Any
) -> None:
    page = open_page(tab, page_server, "/spa", sdk_page(live_server.url, app.public_key))
    start = f"{page_server.origin}/spa"
    page.evaluate("history.pushState({}, '', '/spa/c/2')")
    page.evaluate("history.replaceState({}, '', '/spa/c/2?tab=x')")
    page.evaluate("history.pushState({}, '', '/spa/c/2?tab=x')")  # same URL: no view
    page.go_back()  # popstate
    page.wait_for_url(f"{page_server.origin}/spa/c/2?tab=x")
    page.evaluate("location.hash = 'part'")  # hashchange
    views = stored(app, "page_view", 4)
    got = [(v["url"], v["referrer"], v["route_change"]) for v in views]
    assert got == [
        (start, None, False),
        (f"{start}/c/2", start, True),
        (f"{start}/c/2?tab=x", f"{start}/c/2", True),
        (f"{start}/c/2?tab=x#part", f"{start}/c/2?tab=x", True),
    ], got
    assert not tab.errors, tab.errors


def test_uncaught_errors_and_rejections_are_reported(
    tab: Tab, live_server: Any, page_server: PageServer, app: Any
) -> None:
    page = open_page(tab, page_server, "/errors", sdk_page(live_server.url, app.public_key))
    page.evaluate("setTimeout(() => { throw new TypeError('boom in a handler'); })")
    page.evaluate("Promise.reject(new Error('nobody caught me')); 0")
    errors = stored(app, "error", 2)
    by_message = {e["message"]: e for e in errors}
    assert set(by_message) == {
        "Uncaught TypeError: boom in a handler",
        "Unhandled rejection: nobody caught me",
    }, by_message
    thrown = by_message["Uncaught TypeError: boom in a handler"]
    assert thrown["lineno"] and thrown["colno"]
    assert "boom in a handler" in thrown["stack"]
    assert "nobody caught me" in by_message["Unhandled rejection: nobody caught me"]["stack"]
    assert any("boom in a handler" in e for e in tab.errors)  # the page still got its error


def test_a_long_error_message_is_cut_at_a_whole_character(
    tab: Tab, live_server: Any, page_server: PageServer, app: Any
) -> None:
    # "Uncaught Error: " and 1,007 x: the 1,024th UTF-16 unit is the first half of an
    # emoji. Cut there, the event would hold a lone surrogate, which the server refuses.
    page = open_page(tab, page_server, "/long-error", sdk_page(live_server.url, app.public_key))
    page.evaluate("setTimeout(() => { throw new Error('x'.repeat(1007) + '😀'.repeat(20)); })")
    (error,) = stored(app, "error")
    assert error["message"] == "Uncaught Error: " + "x" * 1007


# --- Web Vitals, and what is reported as the page goes -------------------------

CONTENT = "<main><h1>Chat</h1><p>" + "An answer worth reading. " * 40 + "</p></main>"


def test_web_vitals_and_events_reported_while_leaving_reach_the_server(
    tab: Tab, live_server: Any, page_server: PageServer, app: Any
) -> None:
    # The page reports an action in its own pagehide and visibilitychange listeners, which
    # run after the SDK's: they must go out although the SDK has already beaconed its
    # queue, and the page is gone before any timer could fire.
    leaving = """<script>
addEventListener('pagehide', () => llmrum.action('pagehide'));
document.addEventListener('visibilitychange', () => llmrum.action(document.visibilityState));
</script>"""
    html = sdk_page(live_server.url, app.public_key, body=CONTENT + leaving)
    page = open_page(tab, page_server, "/vitals", html)
    vitals = {v["name"] for v in stored(app, "vital", 2)}
    assert {"FCP", "TTFB"} <= vitals  # reported while the page lives
    # The page has painted its largest content (web-vitals observes the same entry).
    page.evaluate(
        """new Promise((resolve) => new PerformanceObserver(() => setTimeout(resolve, 50))
            .observe({type: 'largest-contentful-paint', buffered: true}))"""
    )
    # LCP and CLS are reported when the page hides: navigating away.
    page.goto(f"{page_server.origin}/elsewhere")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = BrowserEvent.objects.filter(app=app)
        vitals = {r.data["name"] for r in rows if r.type == "vital"}
        actions = {r.data["name"] for r in rows if r.type == "action"}
        if {"FCP", "TTFB", "LCP", "CLS"} <= vitals and {"pagehide", "hidden"} <= actions:
            break
        time.sleep(0.1)
    assert {"FCP", "TTFB", "LCP", "CLS"} <= vitals, [(r.type, r.data) for r in rows]
    assert {"pagehide", "hidden"} <= actions, actions
    for v in stored(app, "vital", 4):
        assert v["value"] >= 0
        assert v["rating"] in ("good", "needs-improvement", "poor")
        assert v["navigation_type"] == "navigate"
    lcp = next(v for v in stored(app, "vital", 4) if v["name"] == "LCP")
    fcp = next(v for v in stored(app, "vital", 4) if v["name"] == "FCP")
    assert lcp["value"] >= fcp["value"] > 0


# --- WebSocket ------------------------------------------------------------------


def _ws_frame(text: str) -> bytes:
    payload = text.encode()
    n = len(payload)
    head = bytes([0x81, n]) if n < 126 else bytes([0x81, 126]) + n.to_bytes(2, "big")
    return head + payload


def _ws_read_text(conn: socket.socket) -> str | None:
    """One masked client frame (text, or close: None)."""
    head = conn.recv(2, socket.MSG_WAITALL)
    if len(head) < 2 or head[0] & 0x0F == 0x8:
        return None
    n = head[1] & 0x7F
    if n == 126:
        n = int.from_bytes(conn.recv(2, socket.MSG_WAITALL), "big")
    elif n == 127:
        n = int.from_bytes(conn.recv(8, socket.MSG_WAITALL), "big")
    mask = conn.recv(4, socket.MSG_WAITALL)
    data = conn.recv(n, socket.MSG_WAITALL)
    return bytes(b ^ mask[i % 4] for i, b in enumerate(data)).decode()


@pytest.fixture
def chat_socket() -> Iterator[str]:
    """A chat over WebSocket (RFC 6455, the server side of text frames, stdlib only):
    each prompt gets the answer of the HTTP chat API, one JSON message a chunk, first
    token at 300 ms then 30 tokens 40 ms apart, then {"type": "done"}."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def session(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(4096)
            key = next(
                line.split(":", 1)[1].strip()
                for line in request.decode().split("\r\n")
                if line.lower().startswith("sec-websocket-key:")
            )
            accept = base64.b64encode(
                hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
            ).decode()
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
            )
            while _ws_read_text(conn) is not None:
                start = time.monotonic()
                messages = [(0.0, {"model": "ws-model", "choices": [{"delta": {"role": "x"}}]})]
                messages += [
                    (
                        FIRST_TOKEN_S + i * TOKEN_GAP_S,
                        {"model": "ws-model", "choices": [{"delta": {"content": f"t{i} "}}]},
                    )
                    for i in range(TOKENS + 1)
                ]
                messages.append((FIRST_TOKEN_S + TOKENS * TOKEN_GAP_S, {"type": "done"}))
                for at, message in messages:
                    time.sleep(max(0.0, start + at - time.monotonic()))
                    conn.sendall(_ws_frame(json.dumps(message)))

    def accept_loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=session, args=(conn,), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    yield f"ws://127.0.0.1:{port}/chat"
    server.close()


def test_a_websocket_stream_is_stored_as_the_page_saw_it(
    tab: Tab, live_server: Any, page_server: PageServer, app: Any, chat_socket: str
) -> None:
    options = (
        f"webSocketTurns: {{match: (u) => u.startsWith({json.dumps(chat_socket)}), "
        "isEnd: (d) => typeof d === 'string' && d.includes('\"done\"')}"
    )
    page = open_page(
        tab, page_server, "/ws", sdk_page(live_server.url, app.public_key, options=options)
    )
    seen = page.evaluate("([u, p]) => runSocket(u, p)", [chat_socket, "hello"])
    assert "error" not in seen
    assert len(seen["data"]) == TOKENS + 3  # the page got every message

    (turn,) = stored(app, "turn")
    assert (turn["outcome"], turn["method"], turn["url"]) == ("completed", "WS", chat_socket)
    page_ttft = seen["first"] - seen["t0"]
    assert abs((turn["t_first_token"] - turn["t_send"]) - page_ttft) <= 15, (turn, page_ttft)
    assert abs(turn["tbt_summary"]["p50"] - TOKEN_GAP_S * 1000) <= 5, turn["tbt_summary"]
    assert abs(statistics.median(seen["gaps"]) - TOKEN_GAP_S * 1000) <= 5
    assert turn["tbt_summary"]["count"] == TOKENS
    assert (turn["model"], turn["output_tokens"], turn["chunks"]) == ("ws-model", TOKENS + 1, 33)
    assert not tab.errors, tab.errors


# --- The bundle from another origin, with SRI ----------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def production_static() -> Iterator[str]:
    """llmrum's WSGI application as production runs it: /static/ is served by the
    WhiteNoise middleware (the live_server fixture serves static files itself)."""
    from django.core.wsgi import get_wsgi_application

    server = make_server(
        "127.0.0.1",
        0,
        get_wsgi_application(),
        server_class=_ThreadingWSGIServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def test_the_bundle_loads_cross_origin_with_sri(
    tab: Tab, page_server: PageServer, production_static: str
) -> None:
    src = f"{production_static}/static/llmrum/llmrum.min.js"
    with urllib.request.urlopen(src) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.read() == BUNDLE.read_bytes()
    sri = "sha384-" + base64.b64encode(hashlib.sha384(BUNDLE.read_bytes()).digest()).decode()
    wrong = "sha384-" + base64.b64encode(hashlib.sha384(b"tampered").digest()).decode()
    for path, integrity, loads in (("/sri", sri, True), ("/sri-wrong", wrong, False)):
        page_server.html[path] = (
            f'<!doctype html><script src="{src}" integrity="{integrity}" '
            'crossorigin="anonymous"></script>'
        )
        tab.page.goto(f"{page_server.origin}{path}")
        kind = tab.page.evaluate("typeof window.llmrum === 'object' && typeof llmrum.init")
        assert kind == ("function" if loads else False), path
    assert not tab.errors, tab.errors
