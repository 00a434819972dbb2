"""The OpenTelemetry browser exporter in real headless Chromium, on a page of another
origin, posting to llmrum's /v1/traces with the application's public key: Chromium
makes the CORS preflight itself, and llmrum keeps the spans as browser-otlp ones
(role service, whatever the page claims) or, from an origin off the list, none."""

from __future__ import annotations

from typing import Any

import pytest

from rumserver.models import Span
from tests import factories
from tests.clients.relay import relay_to
from tests.clients.trace_api import api_token, assert_spans_arrived, read_stitched_trace

pytestmark = pytest.mark.postgres

BROWSER_OTLP = {"llmrum.source": "browser-otlp"}
# Which transport the exporter picks, seen from the page: the pinned version posts with
# fetch (keepalive while the pending bodies fit the browser's 64 KiB budget) and has no
# sendBeacon or XMLHttpRequest path left; the spies would show one if it came back.
SPIES = """
window.transports = [];
const realFetch = window.fetch;
window.fetch = function (input, init) {
  transports.push({ api: "fetch", url: String(input), keepalive: !!(init && init.keepalive),
                    mode: init && init.mode });
  return realFetch.apply(this, arguments);
};
const realBeacon = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, data) => { transports.push({ api: "sendBeacon" }); return realBeacon(url, data); };
const realOpen = XMLHttpRequest.prototype.open;
XMLHttpRequest.prototype.open = function () { transports.push({ api: "xhr" }); return realOpen.apply(this, arguments); };
"""


def export_from_page(browser: Any, page_server: Any, bundle: str, options: dict) -> dict:
    path = f"/otel-{len(page_server.html)}.html"
    page_server.html[path] = (
        f"<!doctype html><title>chat</title><script>{SPIES}</script><script>{bundle}</script>"
    )
    page = browser.new_page()
    try:
        page.goto(page_server.origin + path)
        result = page.evaluate("options => window.otelExport(options)", options)
        result["transports"] = page.evaluate("window.transports")
    finally:
        page.close()
    return result


@pytest.fixture
def page_app(page_server: Any) -> Any:
    return factories.make_app("Web", origins=[page_server.origin])


@pytest.mark.parametrize("key_in", ["query", "header"])
def test_a_page_exports_its_spans_with_the_public_key(
    browser, page_server, otel_browser_bundle, start_web, page_app, key_in
):
    key = page_app.application.public_key
    base = start_web()
    with relay_to(base) as relay:
        options: dict[str, Any] = {"url": f"{relay.url}/v1/traces"}
        if key_in == "query":
            options["url"] += f"?key={key}"
        else:
            options["headers"] = {"x-llmrum-key": key}
        small = export_from_page(browser, page_server, otel_browser_bundle, options)
        # Over the 64 KiB keepalive budget: the exporter's other fetch, without keepalive.
        large = export_from_page(
            browser, page_server, otel_browser_bundle, {**options, "padding": 8000}
        )
        requests, statuses = relay.requests(), relay.statuses()

    assert (small["error"], large["error"]) == (None, None)
    assert [t["keepalive"] for t in small["transports"] + large["transports"]] == [True, False]
    assert {(t["api"], t["mode"]) for t in small["transports"] + large["transports"]} == {
        ("fetch", "cors")
    }
    # Chromium asked first (application/json is not a simple content type), then posted.
    preflights = [r for r in requests if r.method == "OPTIONS"]
    posts = [r for r in requests if r.method == "POST"]
    assert len(posts) == 2 and 1 <= len(preflights) <= 2  # a preflight may be cached
    asked = {h.strip() for h in preflights[0].headers["access-control-request-headers"].split(",")}
    assert asked == ({"content-type", "x-llmrum-key"} if key_in == "header" else {"content-type"})
    for request in preflights + posts:
        assert request.headers["origin"] == page_server.origin
    assert [p.headers["content-type"] for p in posts] == ["application/json"] * 2
    assert all(s in (200, 204) for s in statuses) and statuses.count(200) >= 2

    token = api_token(page_app)
    for result, count in ((small, 2), (large, 12)):
        spans = result["spans"]
        assert len(spans) == count and len({s["trace_id"] for s in spans}) == 1
        answer = read_stitched_trace(base, token, spans[0]["trace_id"])
        # The page claimed llmrum.role=gateway on a span: it decides nothing.
        assert_spans_arrived(
            answer, spans, service="chat-web", role="service", added_attributes=BROWSER_OTLP
        )


def test_a_page_on_an_origin_off_the_list_stores_nothing(
    browser, page_server, otel_browser_bundle, start_web
):
    app = factories.make_app("Web", origins=["https://chat.example.com"])
    key = app.application.public_key
    base = start_web()
    with relay_to(base) as relay:
        # The exporter retries a network error until its timeout: keep that short.
        by_query = export_from_page(browser, page_server, otel_browser_bundle,
                                    {"url": f"{relay.url}/v1/traces?key={key}",
                                     "timeoutMillis": 1500})  # fmt: skip
        query_requests = relay.requests()
    with relay_to(base) as relay:
        by_header = export_from_page(browser, page_server, otel_browser_bundle,
                                     {"url": f"{relay.url}/v1/traces", "timeoutMillis": 1500,
                                      "headers": {"x-llmrum-key": key}})  # fmt: skip
        header_requests, header_answers = relay.requests(), relay.answers()

    assert by_query["error"] and by_header["error"]
    # With ?key= the preflight is refused (no Access-Control-Allow-Origin): no POST at all.
    assert {r.method for r in query_requests} == {"OPTIONS"}
    # The header's value is not in a preflight, so that one passes; the POST is refused.
    posts = [r for r in header_requests if r.method == "POST"]
    assert posts and all(r.headers["origin"] == page_server.origin for r in posts)
    assert b"HTTP/1.1 403 " in header_answers and b"is not allowed for this application" in (
        header_answers
    )
    trace_ids = {s["trace_id"] for s in by_query["spans"] + by_header["spans"]}
    assert len(trace_ids) == 2
    assert not Span.objects.filter(trace_id__in=trace_ids).exists()
    assert not Span.objects.exists()
