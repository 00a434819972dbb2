"""The trace search, the sessions index and scores in real headless Chromium: search
a trace id, a session id and a user id from the trace list's form; open a session
from the sessions index; post a score through the API and see it on the trace page.
Screenshots are kept in tests/artifacts/ (ignored by git)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from rumserver.models import BrowserSession
from tests.browser.conftest import CHROMIUM
from tests.browser.test_reports import log_in, nothing_ran, shot
from tests.reports.conftest import XSS_SCRIPT, make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def search(page, text: str) -> None:
    page.fill("input[name=q]", text)
    page.click(".filters button[type=submit]")
    page.wait_for_load_state()


def listed(page) -> list[str]:
    rows = page.locator("#trace-list tbody tr")
    return [rows.nth(i).get_attribute("data-trace") for i in range(rows.count())]


def test_a_member_searches_a_trace_a_session_and_a_user(reports, live_server, stitched):
    page, base = reports, live_server.url
    slug = stitched.app.application.slug
    BrowserSession.objects.filter(session_id="sess-xss").update(user_id="user-42")
    make_user("alice", app=stitched.app)
    log_in(page, base, "alice", "/reports/traces")

    # An exact trace id opens its trace.
    search(page, stitched.golden.trace_id)
    page.wait_for_url(f"{base}/reports/traces/{stitched.golden.trace_id}?app={slug}")
    assert stitched.golden.trace_id in page.locator("h1").inner_text()
    nothing_ran(page)
    shot(page, "search-trace-id")

    # A session id lists its turns' traces, newest first, and stays in the box.
    page.goto(f"{base}/reports/traces?app={slug}")
    search(page, "sess-report")
    assert listed(page) == [
        stitched.regenerated.trace_id, stitched.stopped.trace_id, stitched.golden.trace_id,
    ]  # fmt: skip
    assert page.input_value("input[name=q]") == "sess-report"
    nothing_ran(page)
    shot(page, "search-session-id")

    # A user id lists the traces of the user's sessions.
    search(page, "user-42")
    assert listed(page) == [stitched.xss.trace_id]
    nothing_ran(page)
    shot(page, "search-user-id")


def test_a_member_opens_a_session_from_the_sessions_index(reports, live_server, stitched):
    page, base = reports, live_server.url
    make_user("alice", app=stitched.app)
    log_in(page, base, "alice")
    page.click("nav >> text=Sessions")
    rows = page.locator("#session-list tbody tr")
    assert rows.count() == 3
    report = BrowserSession.objects.get(session_id="sess-report")
    row = page.locator(f'tr[data-session="{report.pk}"]')
    assert [c.strip() for c in row.locator("td.num").all_inner_texts()][:3] == ["3", "1", "0"]
    nothing_ran(page)
    shot(page, "sessions")
    row.locator("a", has_text="sess-report").click()
    page.wait_for_url(f"{base}/reports/sessions/{report.pk}")
    assert "sess-report" in page.locator("h1").inner_text()
    assert page.locator("table.timeline tr.turn").count() == 3
    nothing_ran(page)
    shot(page, "session-from-index")


def test_a_score_posted_through_the_api_shows_on_the_trace_page(reports, live_server, stitched):
    page, base = reports, live_server.url
    body = {"trace_id": stitched.golden.trace_id, "name": "hallucination", "value": 0.75,
            "comment": XSS_SCRIPT}  # fmt: skip
    request = urllib.request.Request(
        f"{base}/api/v1/scores", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": f"Bearer {stitched.app.ingest_token}"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    make_user("alice", app=stitched.app)
    log_in(page, base, "alice", f"/reports/traces/{stitched.golden.trace_id}")
    score = page.locator("table.scores tr.score")
    assert score.count() == 1
    cells = score.first.locator("td").all_inner_texts()
    assert cells[:3] == ["hallucination", "0.75", XSS_SCRIPT]  # the comment, as text
    page.wait_for_timeout(300)
    nothing_ran(page)
    shot(page, "trace-scores")
