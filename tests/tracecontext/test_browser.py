"""Real headless Chromium: a chat page on one origin calls a Django gateway on
another with ``traceparent`` and ``baggage``, as the llmrum snippet does. The
preflight must pass, the gateway must continue the browser's trace, and the page
must be able to read ``Server-Timing`` back; a page on a foreign origin must fail."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chromium import CHROMIUM, launched_chromium
from tests.tracecontext.conftest import PARENT_ID, TRACE_ID, Pages

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api")

# What the snippet does for a chat request, then what it reads back.
CHAT_FETCH = """async ({url, traceparent}) => {
  try {
    const response = await fetch(url, {
      method: "POST",
      headers: {"content-type": "application/json", traceparent, baggage: "session.id=abc"},
      body: "{}",
    });
    const body = await response.json();
    // The resource entry is queued when the body has ended; give it a moment.
    let entry;
    for (let i = 0; i < 100 && !entry; i++) {
      entry = performance.getEntriesByName(url, "resource")[0];
      if (!entry) await new Promise((resolve) => setTimeout(resolve, 20));
    }
    return {
      ok: true,
      body,
      header: response.headers.get("server-timing"),
      responseStart: entry ? entry.responseStart : null,
      serverTiming: entry
        ? entry.serverTiming.map((e) => ({name: e.name, duration: e.duration, description: e.description}))
        : null,
    };
  } catch (error) {
    return {ok: false, error: String(error)};
  }
}"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launched_chromium(sync_api) as browser:
        yield browser


def chat_from(browser: Any, page_origin: str, gateway: str) -> tuple[dict[str, Any], list[str]]:
    page = browser.new_page()
    page.set_default_timeout(10_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(message.text))
    try:
        page.goto(f"{page_origin}/")
        result = page.evaluate(
            CHAT_FETCH,
            {"url": f"{gateway}/api/chat", "traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
        )
    finally:
        page.close()
    return result, console


def test_the_gateway_continues_the_browsers_trace(browser: Any, pages: Pages, gateway: str) -> None:
    before = time.time() * 1000
    result, console = chat_from(browser, pages.allowed, gateway)
    after = time.time() * 1000
    assert result["ok"], (result, console)  # the preflight passed
    seen = result["body"]
    assert (seen["trace_id"], seen["span_id"]) == (TRACE_ID, PARENT_ID)
    assert seen["session_id"] == "abc"

    # Server-Timing is readable through Resource Timing (Timing-Allow-Origin) ...
    timing = {entry["name"]: entry for entry in result["serverTiming"]}
    assert timing["trace"]["description"] == f"00-{TRACE_ID}-{PARENT_ID}-01"
    assert timing["total"]["duration"] > 0
    assert before <= float(timing["llmrum-now"]["description"]) <= after
    assert result["responseStart"] > 0  # network phases are not zeroed either
    # ... and as a header at response time, before a streamed body ends.
    assert result["header"].startswith("trace;desc=00-")


def test_a_foreign_origin_fails_the_preflight(browser: Any, pages: Pages, gateway: str) -> None:
    result, console = chat_from(browser, pages.foreign, gateway)
    assert not result["ok"]
    assert "Failed to fetch" in result["error"]
    assert any("CORS policy" in line for line in console), console
