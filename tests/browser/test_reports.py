"""The report pages in real headless Chromium: log in, open each page, check the
figures against the stitched data the test put in, keep a screenshot of each page
(tests/artifacts/, ignored by git), and make sure hostile values from spans and
beacons render as text and run nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission

from rumserver.models import BrowserSession
from tests import factories
from tests.browser.conftest import CHROMIUM
from tests.reports.conftest import (
    PASSWORD,
    XSS_IMG,
    XSS_SCRIPT,
    make_user,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


def log_in(page: Any, base: str, username: str, next_path: str = "/reports/") -> None:
    page.goto(f"{base}{next_path}")
    assert "/accounts/login/" in page.url  # login required
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}{next_path}")


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"reports-{name}.png"), full_page=True)


def figure(page: Any, key: str) -> str:
    return page.locator(f'[data-figure="{key}"] .value').first.inner_text()


def nothing_ran(page: Any) -> None:
    assert page.dialogs == [] and page.errors == []
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("img").count() == 0


def test_a_member_clicks_through_every_report(reports, live_server, stitched):
    page, base = reports, live_server.url
    slug = stitched.app.application.slug
    make_user("alice", app=stitched.app)
    log_in(page, base, "alice")

    # Overview: the window's figures, charts drawn, the stylesheet applied.
    assert figure(page, "turns") == "5"
    assert figure(page, "sessions") == "3"
    assert figure(page, "input_tokens") == "3,248"
    assert figure(page, "error_rate") == "20.0%"
    client_ttft = page.locator('[data-metric="client_ttft_ms"]')
    assert client_ttft.locator(".p50").inner_text() == "620 ms"
    assert page.locator('[data-metric="server_ttft_ms"] .p50').inner_text() == "520 ms"
    assert page.locator('[data-metric="model_ttft_ms"] .p50').inner_text() == "450 ms"
    assert page.locator("svg.chart").count() >= 7
    assert (
        page.locator("table[data-group=model]").inner_text().count("meta-llama/Llama-3.1-8B") == 1
    )
    assert XSS_IMG in page.locator("table[data-group=model]").inner_text()  # as text
    assert page.evaluate("getComputedStyle(document.body).margin") == "0px"
    nothing_ran(page)
    shot(page, "overview")

    # Trace list: filter by outcome, then open the golden trace.
    page.click("nav >> text=Traces")
    page.select_option("select[name=outcome]", "stopped")
    page.click(".filters button[type=submit]")
    rows = page.locator("#trace-list tbody tr")
    assert rows.count() == 1 and rows.first.get_attribute("data-trace") == stitched.stopped.trace_id
    page.goto(f"{base}/reports/traces?app={slug}")
    assert page.locator("#trace-list tbody tr").count() == 6
    shot(page, "traces")
    page.click(f'a[href^="/reports/traces/{stitched.golden.trace_id}"]')

    # Waterfall: four spans on one timeline, three TTFT marks, the wait split.
    assert page.locator("g.span-row").count() == 4
    roles = [page.locator("g.span-row").nth(i).get_attribute("data-role") for i in range(4)]
    assert roles == ["browser", "gateway", "gateway", "model"]
    marks = page.locator("g.mark")
    assert [marks.nth(i).get_attribute("data-mark") for i in range(3)] == [
        "client first token", "server first token", "model first token",
    ]  # fmt: skip
    assert figure(page, "client_ttft_ms") == "620 ms"
    assert figure(page, "network_overhead_ms") == "100 ms"
    parts = page.locator("figcaption .part").all_inner_texts()
    assert parts == ["client + network: 100 ms", "gateway: 70 ms", "queue: 30 ms", "model: 420 ms"]
    assert page.locator("tr.attr th", has_text="gen_ai.latency.time_to_first_token").count() == 1
    # The browser span starts no later than the gateway's (skew-corrected timeline).
    bars = page.locator("g.span-row rect")
    assert float(bars.nth(0).get_attribute("x")) <= float(bars.nth(1).get_attribute("x"))
    nothing_ran(page)
    shot(page, "trace")

    # Session: reached from the trace page; turns and actions in order.
    page.click('dd a[href^="/reports/sessions/"]')
    kinds = page.locator("table.timeline tbody tr").evaluate_all(
        "rows => rows.map(r => r.className)"
    )
    assert kinds == ["turn", "turn", "event action", "turn", "event feedback"]
    assert page.locator("tr.turn").nth(1).locator(".outcome").inner_text() == "stopped"
    assert XSS_SCRIPT in page.locator("tr.event.feedback").inner_text()  # the comment, as text
    nothing_ran(page)
    shot(page, "session")

    # Propagation health.
    page.click("nav >> text=Propagation")
    row = page.locator(f'tr[data-app="{slug}"]')
    assert row.locator(".share").inner_text() == "80.0%"
    assert page.locator('[data-cause="cors_preflight_failed"]').count() == 1
    assert "Access-Control-Allow-Headers" in page.locator("#causes").inner_text()
    assert page.locator("#unlinked tbody tr").count() == 2
    nothing_ran(page)
    shot(page, "propagation")


def test_a_click_on_a_client_ttft_point_lists_the_traces_of_its_bucket(
    reports, live_server, stitched
):
    """The drill-down (issue 13): from the overview, click the client TTFT point of the
    golden turn's step and land on the trace list of that step."""
    page, base = reports, live_server.url
    slug = stitched.app.application.slug
    make_user("alice", app=stitched.app)
    log_in(page, base, "alice")
    page.goto(f"{base}/reports/?app={slug}&range=1h")
    chart = page.locator(
        'svg[aria-label="Time to first token, p50: client next to server and model"]'
    )
    points = chart.locator('g.series[data-series="client"] a.drill')
    assert points.count() >= 1
    golden_at = datetime.fromtimestamp(stitched.golden.t0 / 1000, UTC)
    buckets = []
    for href in points.evaluate_all("links => links.map(a => a.getAttribute('href'))"):
        query = parse_qs(urlsplit(href).query)
        buckets.append(
            (datetime.fromisoformat(query["since"][0]), datetime.fromisoformat(query["until"][0]))
        )
    index = next(i for i, (lo, hi) in enumerate(buckets) if lo <= golden_at < hi)
    points.nth(index).click()
    page.wait_for_url(f"{base}/reports/traces?**")
    query = parse_qs(urlsplit(page.url).query)
    assert query["app"] == [slug]
    since, until = (datetime.fromisoformat(query[k][0]) for k in ("since", "until"))
    assert (since, until) == buckets[index] and until - since <= timedelta(minutes=5)
    listed = page.locator("#trace-list tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.trace)"
    )
    assert stitched.golden.trace_id in listed
    # The list's form holds the step, so a further filter keeps it.
    shown = page.locator("input[name=since]").input_value()  # Chromium drops ":00"
    assert datetime.fromisoformat(shown).replace(tzinfo=UTC) == since
    nothing_ran(page)
    shot(page, "drill-down")


def test_hostile_span_attributes_render_as_text_and_run_nothing(reports, live_server, stitched):
    page, base = reports, live_server.url
    make_user("alice", app=stitched.app)
    log_in(page, base, "alice", f"/reports/traces/{stitched.xss.trace_id}")
    assert page.locator("details.span[open]").count() == 0  # collapsed until clicked
    summaries = page.locator("details.span summary")
    for i in range(summaries.count()):
        summaries.nth(i).click()
    attrs = page.locator("tr.attr")
    assert attrs.filter(has_text="http.route").locator("td").inner_text() == XSS_IMG
    assert attrs.filter(has_text="llmrum.note").locator("td").inner_text() == XSS_SCRIPT
    assert XSS_SCRIPT in page.locator("g.span-row").nth(1).text_content()  # SVG text too
    page.wait_for_timeout(300)  # an onerror would have fired by now
    nothing_ran(page)
    shot(page, "trace-hostile")
    session = BrowserSession.objects.get(session_id="sess-xss")
    page.goto(f"{base}/reports/sessions/{session.pk}")
    assert XSS_SCRIPT in page.locator("h2").first.inner_text()  # the conversation id
    nothing_ran(page)


def test_a_member_of_another_application_sees_none_of_it(reports, live_server, stitched):
    page, base = reports, live_server.url
    make_user("bob", app=factories.make_app("Other"))
    log_in(page, base, "bob")
    slug = stitched.app.application.slug
    for path in (f"/reports/?app={slug}", f"/reports/traces/{stitched.golden.trace_id}",
                 "/reports/sessions/sess-report", f"/reports/propagation?app={slug}"):  # fmt: skip
        response = page.goto(f"{base}{path}")
        assert response.status == 404, path
        assert stitched.golden.trace_id not in page.content()
    page.goto(f"{base}/reports/traces")
    assert page.locator("#trace-list").count() == 0  # bob's application has no traces
    options = page.locator("select[name=app] option").all_inner_texts()
    assert len(options) == 1 and options[0].startswith("Other")
    shot(page, "other-member")


def test_staff_find_a_trace_in_the_admin_and_open_its_waterfall(reports, live_server, stitched):
    page, base = reports, live_server.url
    make_user("root", staff=True).user_permissions.set(
        Permission.objects.filter(
            content_type__app_label__in=["correlator", "rumserver"], codename__startswith="view_"
        )
    )
    log_in(page, base, "root")
    page.goto(f"{base}/admin/correlator/trace/?q={stitched.golden.trace_id}")
    rows = page.locator("#result_list tbody tr")
    assert rows.count() == 1
    assert page.locator("#changelist-filter").count() == 1  # filters by state, linked, app
    shot(page, "admin-traces")
    rows.first.locator("a", has_text="waterfall").click()
    assert page.locator("g.span-row").count() == 4
    page.goto(f"{base}/admin/rumserver/span/?q={stitched.golden.trace_id}")
    assert page.locator("#result_list tbody tr").count() == 4
    assert page.errors == []
