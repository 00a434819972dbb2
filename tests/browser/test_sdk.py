"""The built SDK (frontend_sdk/static/llmrum/llmrum.min.js, served by llmrum) in real
headless Chromium: what it stores for a chat turn matches what the page itself
measured, it traces only where it may, and it leaves the page's bytes alone."""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rumserver.models import BrowserEvent
from tests import factories
from tests.browser.conftest import (
    CHROMIUM,
    STREAM_BODY,
    TOKEN_GAP_S,
    ChatApi,
    FlakyProxy,
    PageServer,
)
from tests.chromium import close_quietly, new_context

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]

# The page's own measurement, taken at the same points the SDK takes its own: when
# fetch is called and when each read that carries content resolves.
PAGE_JS = """
window.runChat = async ({url, stopAfter}) => {
  const now = () => performance.timeOrigin + performance.now();
  const ac = new AbortController();
  const t0 = now();
  const res = await fetch(url, {method: "POST", headers: {"content-type": "application/json"},
                               body: "{}", signal: ac.signal});
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let text = "", first = null, last = null, tokens = 0, outcome = "completed";
  const gaps = [];
  window.firstToken = new Promise((resolve) => (window.gotFirstToken = resolve));
  try {
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      const t = now();
      const s = decoder.decode(value, {stream: true});
      text += s;
      const n = (s.match(/"content": "[^"]+"/g) || []).length;
      if (n) {
        if (first === null) { first = t; window.gotFirstToken(); } else gaps.push(t - last);
        last = t;
        tokens += n;
      }
      if (stopAfter && tokens >= stopAfter) ac.abort();
    }
  } catch (error) {
    outcome = error.name;
  }
  return {t0, first, gaps, text, outcome, status: res.status};
};

// The same over EventSource: closed by the page at [DONE], as apps do.
window.runEventSource = (url) => new Promise((resolve) => {
  const now = () => performance.timeOrigin + performance.now();
  const t0 = now();
  const es = new EventSource(url);
  let first = null, last = null;
  const data = [], gaps = [];
  es.onmessage = (e) => {
    const t = now();
    data.push(e.data);
    if (e.data === "[DONE]") {
      es.close();
      resolve({t0, first, gaps, data, instance: es instanceof EventSource});
    } else if (e.data.includes('"content"')) {
      if (first === null) first = t; else gaps.push(t - last);
      last = t;
    }
  };
  es.onerror = () => resolve({t0, first, gaps, data, error: true});
});
"""


def chat_page(live_url: str, key: str, chat_api: ChatApi, endpoint: str | None = None) -> str:
    options = {
        "endpoint": endpoint or live_url,
        "key": key,
        "tracePropagationTargets": [chat_api.url],
        "flushInterval": 200,
    }
    return f"""<!doctype html><title>chat</title>
<script src="{live_url}/static/llmrum/llmrum.min.js"></script>
<script src="{live_url}/static/llmrum/llmrum.eventsource.min.js"></script>
<script>llmrum.init(Object.assign({json.dumps(options)}, {{chatUrls: [/\\/v1\\/chat\\/completions/]}}));</script>
<script>{PAGE_JS}</script>"""


@pytest.fixture
def app(live_server: Any, page_server: PageServer) -> Any:
    created = factories.make_app(origins=[page_server.origin])
    return created.application


@pytest.fixture
def page(
    browser: Any, live_server: Any, page_server: PageServer, chat_api: ChatApi, app: Any
) -> Iterator[Any]:
    page_server.html["/chat"] = chat_page(live_server.url, app.public_key, chat_api)
    context = new_context(browser)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{page_server.origin}/chat")
    chat_api.requests.clear()
    yield page
    close_quietly(context)
    assert not errors, errors  # the SDK never throws into the page


def stored_turns(app: Any, count: int = 1, timeout: float = 10.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = list(BrowserEvent.objects.filter(app=app, type="turn").order_by("ts_ms"))
        if len(rows) >= count:
            return [row.data for row in rows]
        time.sleep(0.1)
    raise AssertionError(f"expected {count} stored turn(s), got {len(rows)}")


def test_a_streamed_turn_is_stored_as_the_page_saw_it(
    page: Any, app: Any, chat_api: ChatApi
) -> None:
    seen = page.evaluate("runChat", {"url": f"{chat_api.url}/v1/chat/completions"})
    assert seen["outcome"] == "completed"
    assert seen["text"].encode() == STREAM_BODY  # the page's bytes are unchanged

    (turn,) = stored_turns(app)
    assert turn["outcome"] == "completed"
    page_ttft = seen["first"] - seen["t0"]
    assert abs((turn["t_first_token"] - turn["t_send"]) - page_ttft) <= 15, (turn, page_ttft)
    assert abs(turn["tbt_summary"]["p50"] - TOKEN_GAP_S * 1000) <= 5, turn["tbt_summary"]
    assert abs(statistics.median(seen["gaps"]) - TOKEN_GAP_S * 1000) <= 5
    assert turn["tbt_summary"]["count"] == len(seen["gaps"])
    assert (turn["model"], turn["output_tokens"], turn["tokens_estimated"]) == (
        "test-model",
        31,
        False,
    )
    assert turn["usage"] == {"prompt_tokens": 7, "completion_tokens": 31, "total_tokens": 38}
    assert turn["url"] == f"{chat_api.url}/v1/chat/completions"
    assert turn["status"] == 200
    # Server-Timing read back through Resource Timing (Timing-Allow-Origin is sent).
    assert [entry["name"] for entry in turn["server_timing"]] == ["llmrum-now"]

    # traceparent reached the target, with exactly the ids of the stored turn.
    (request,) = chat_api.requests
    assert request["traceparent"] == f"00-{turn['trace_id']}-{turn['span_id']}-01"
    assert request["baggage"].startswith("session.id=")


def test_trace_headers_never_reach_a_non_target(
    page: Any, app: Any, chat_api: ChatApi, other_api: ChatApi
) -> None:
    other_api.requests.clear()
    seen = page.evaluate("runChat", {"url": f"{other_api.url}/v1/chat/completions"})
    # The non-target refuses trace headers in its preflight: the chat works, so none were sent.
    assert seen["outcome"] == "completed"
    (request,) = other_api.requests
    assert "traceparent" not in request
    assert "baggage" not in request
    (turn,) = stored_turns(app)
    assert turn["outcome"] == "completed"


def test_an_abort_mid_stream_is_stored_as_stopped(page: Any, app: Any, chat_api: ChatApi) -> None:
    seen = page.evaluate("runChat", {"url": f"{chat_api.url}/v1/chat/completions", "stopAfter": 5})
    assert seen["outcome"] == "AbortError"
    (turn,) = stored_turns(app)
    assert turn["outcome"] == "stopped"
    assert 5 <= turn["output_tokens"] < 31


def test_leaving_mid_answer_is_stored_as_abandoned(
    page: Any, app: Any, chat_api: ChatApi, page_server: PageServer
) -> None:
    page.evaluate("url => { window.chat = runChat({url}); }", f"{chat_api.url}/v1/chat/completions")
    page.wait_for_function("window.firstToken !== undefined")
    page.evaluate("window.firstToken")
    page.goto(f"{page_server.origin}/elsewhere")  # pagehide: the beacon must still go out
    (turn,) = stored_turns(app)
    assert turn["outcome"] == "abandoned"
    assert turn["t_first_token"] is not None
    assert turn["output_tokens"] < 31


def test_an_event_source_stream_is_stored_as_the_page_saw_it(
    page: Any, app: Any, chat_api: ChatApi
) -> None:
    seen = page.evaluate("runEventSource", f"{chat_api.url}/v1/chat/completions")
    assert "error" not in seen
    assert seen["instance"]
    # The page got every event, with its data unchanged.
    expected = [part.decode().removeprefix("data: ") for part in STREAM_BODY.split(b"\n\n") if part]
    assert seen["data"] == expected

    (turn,) = stored_turns(app)
    assert turn["outcome"] == "completed"
    assert turn["method"] == "GET"
    assert turn["url"] == f"{chat_api.url}/v1/chat/completions"
    page_ttft = seen["first"] - seen["t0"]
    assert abs((turn["t_first_token"] - turn["t_send"]) - page_ttft) <= 15, (turn, page_ttft)
    assert abs(turn["tbt_summary"]["p50"] - TOKEN_GAP_S * 1000) <= 5, turn["tbt_summary"]
    assert (turn["model"], turn["output_tokens"], turn["tokens_estimated"]) == (
        "test-model",
        31,
        False,
    )
    # EventSource cannot send headers: no traceparent, but the turn has its own ids.
    (request,) = chat_api.requests
    assert "traceparent" not in request
    assert len(turn["trace_id"]) == 32
    assert len(turn["span_id"]) == 16


# --- llmrum down or failing: the page keeps working and nothing is lost or doubled ---

OUTBOX_KEYS = "Object.keys(localStorage).filter((k) => k.startsWith('llmrum:outbox:'))"


def wait_until(predicate: Any, what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def flaky_page(
    browser: Any,
    live_server: Any,
    page_server: PageServer,
    chat_api: ChatApi,
    app: Any,
    flaky_proxy: FlakyProxy,
) -> Iterator[tuple[Any, list[str]]]:
    """The chat page with the SDK's endpoint behind the proxy (which starts down), and
    the page's uncaught errors and console errors, but for the browser's own network
    lines ("Failed to load resource: ...") that any failed request logs."""
    page_server.html["/flaky"] = chat_page(
        live_server.url, app.public_key, chat_api, endpoint=flaky_proxy.url
    )
    context = new_context(browser)
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))

    def on_console(message: Any) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(f"console: {message.text}")

    page.on("console", on_console)
    yield page, errors
    close_quietly(context)


def settle(page: Any, app: Any, proxy: FlakyProxy) -> set[str]:
    """Waits until the SDK holds nothing (no outbox in localStorage) and every event
    the proxy ever saw is stored; returns the ids of those events."""
    state: dict[str, Any] = {}

    def done() -> bool:
        with proxy.lock:
            seen = {i for entry in proxy.log for i in entry["ids"]}
        stored = set(BrowserEvent.objects.filter(app=app).values_list("event_id", flat=True))
        state.update(seen=seen, stored=stored)
        return bool(seen) and seen <= stored and not page.evaluate(OUTBOX_KEYS)

    try:
        wait_until(done, "every beacon to be delivered")
    except AssertionError:
        raise AssertionError(
            f"missing: {state.get('seen', set()) - state.get('stored', set())}, log: {proxy.log}"
        ) from None
    return state["seen"]


def _ids(entries: list[dict[str, Any]], *, vitals: bool) -> list[str]:
    # Web Vitals are left out of the once-only checks: a metric is reported again under
    # its own id as it changes (the server updates it), and the page may report one at
    # any moment, after the snapshot `settle` took.
    return [
        event_id
        for entry in entries
        for event_id, kind in zip(entry["ids"], entry["types"], strict=True)
        if vitals or kind != "vital"
    ]


def assert_delivered_once(app: Any, proxy: FlakyProxy) -> None:
    with proxy.lock:
        log = list(proxy.log)  # one snapshot for both sides of the comparison
    delivered = _ids([entry for entry in log if entry["outcome"] == 202], vitals=False)
    tried = set(_ids(log, vitals=False))
    # Each event went out in exactly one accepted batch: none re-sent after a 202.
    assert len(delivered) == len(set(delivered)), log
    # ...and nothing that was tried while failing was dropped on the way.
    assert set(delivered) == tried
    stored = BrowserEvent.objects.filter(app=app).exclude(type="vital")
    assert set(stored.values_list("event_id", flat=True)) == tried
    # The SDK never reported an error of its own making.
    assert not BrowserEvent.objects.filter(app=app, type="error").exists()


def test_a_failing_server_leaves_the_page_working_and_gets_every_beacon_once(
    flaky_page: tuple[Any, list[str]],
    app: Any,
    chat_api: ChatApi,
    page_server: PageServer,
    flaky_proxy: FlakyProxy,
) -> None:
    page, errors = flaky_page
    page.goto(f"{page_server.origin}/flaky")
    url = f"{chat_api.url}/v1/chat/completions"
    # Two chat turns while every beacon fails (a 500 first, then dropped connections).
    for _ in range(2):
        seen = page.evaluate("runChat", {"url": url})
        assert (seen["outcome"], seen["status"]) == ("completed", 200)
        assert seen["text"].encode() == STREAM_BODY
    wait_until(lambda: len(flaky_proxy.failures()) >= 2, "two failed beacons")
    assert not flaky_proxy.delivered()
    assert page.evaluate(OUTBOX_KEYS)  # held in localStorage meanwhile

    with flaky_proxy.lock:
        flaky_proxy.down = False
    settle(page, app, flaky_proxy)
    assert_delivered_once(app, flaky_proxy)

    failures = flaky_proxy.failures()
    assert [f["outcome"] for f in failures[:2]] == ["500", "closed"]
    # Backoff: 1 s, then doubling, each with +-25% jitter; never a tight loop.
    attempts = failures + flaky_proxy.delivered()[:1]
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(attempts)]
    for n, gap in enumerate(gaps):
        assert gap >= 0.75 * 2**n - 0.05, gaps
    assert len(failures) <= 4, failures

    turns = BrowserEvent.objects.filter(app=app, type="turn")
    assert turns.count() == 2  # one per turn made, none lost
    assert sorted(row.data["outcome"] for row in turns) == ["completed", "completed"]
    assert not errors, errors


def test_beacons_left_unsent_by_a_reload_are_sent_by_the_next_page_once(
    flaky_page: tuple[Any, list[str]],
    app: Any,
    chat_api: ChatApi,
    page_server: PageServer,
    flaky_proxy: FlakyProxy,
) -> None:
    page, errors = flaky_page
    page.goto(f"{page_server.origin}/flaky")
    seen = page.evaluate("runChat", {"url": f"{chat_api.url}/v1/chat/completions"})
    assert seen["outcome"] == "completed"
    wait_until(lambda: flaky_proxy.failures(), "a failed beacon")

    # Leaving while the server fails: no beacon (it would be lost), the batches stay in
    # localStorage, and the next page load takes them over and sends them at once.
    before = {tuple(f["ids"]) for f in flaky_proxy.failures()}
    reloaded_at = time.monotonic()
    page.reload()

    def resent_by_next_page() -> bool:
        after = [f for f in flaky_proxy.failures() if f["at"] > reloaded_at]
        # The old page is gone: the new one can know these ids only from localStorage.
        return any(tuple(f["ids"]) in before for f in after)

    wait_until(resent_by_next_page, "the next page to resend the unsent batch")
    with flaky_proxy.lock:
        flaky_proxy.down = False
    settle(page, app, flaky_proxy)
    assert_delivered_once(app, flaky_proxy)

    turn_ids = [
        i
        for entry in flaky_proxy.delivered()
        for i, t in zip(entry["ids"], entry["types"], strict=True)
        if t == "turn"
    ]
    assert len(turn_ids) == 1
    assert BrowserEvent.objects.filter(app=app, type="turn").count() == 1
    assert BrowserEvent.objects.filter(app=app, type="page_view").count() == 2  # one per load
    assert not errors, errors
