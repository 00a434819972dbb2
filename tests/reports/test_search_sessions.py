"""The trace search and filters on the page, scores on the trace page, the sessions
index and the site root (DESIGN.md §10.5), through Django's test client."""

from __future__ import annotations

import re

import pytest
from django.test import Client

from rumserver.models import BrowserSession
from tests.correlator.golden import send_score
from tests.reports.conftest import XSS_IMG, XSS_SCRIPT, Stitched
from tests.reports.test_pages import logged_in, text_of

pytestmark = pytest.mark.django_db


def post_score(stitched: Stitched, trace_id: str, name: str, value: float, comment: str) -> None:
    send_score(stitched.app.ingest_token, trace_id, name, value, comment)


def test_the_site_root_redirects_to_the_reports(client):
    r = client.get("/")
    assert r.status_code == 302 and r["Location"] == "/reports/"


def test_an_exact_trace_id_searched_opens_its_trace(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    for q in (stitched.golden.trace_id, f" {stitched.golden.trace_id.upper()} "):
        r = client.get("/reports/traces", {"app": slug, "q": q})
        assert r.status_code == 302, q
        assert r["Location"] == f"/reports/traces/{stitched.golden.trace_id}?app={slug}"
    # 32 hex digits that are no trace of this application: the list says no match.
    html = client.get("/reports/traces", {"app": slug, "q": "f" * 32}).content.decode()
    assert "No traces match." in html


def listed(client: Client, **query: str) -> list[str]:
    r = client.get("/reports/traces", query)
    assert r.status_code == 200, r.content
    return re.findall(r'<tr data-trace="([0-9a-f]{32})">', r.content.decode())


def test_the_trace_list_searches_sessions_users_and_conversations(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    report = [stitched.regenerated.trace_id, stitched.stopped.trace_id, stitched.golden.trace_id]
    assert listed(client, app=slug, q="sess-report") == report
    BrowserSession.objects.filter(session_id="sess-xss").update(user_id="user-42")
    assert listed(client, app=slug, q="user-42") == [stitched.xss.trace_id]
    assert listed(client, app=slug, q="conv-cors") == [stitched.cors]
    assert listed(client, app=slug, q=XSS_SCRIPT) == [stitched.xss.trace_id]  # a conversation
    assert listed(client, app=slug, q="sess-report", outcome="stopped") == [report[1]]
    assert listed(client, app=slug, q="nobody") == []
    html = client.get("/reports/traces", {"app": slug, "q": "sess-report"}).content.decode()
    assert 'value="sess-report"' in html  # kept in the form


def test_the_trace_list_filters_by_session_score_and_attribute(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    post_score(stitched, stitched.golden.trace_id, "relevance", 0.8, "")
    assert listed(client, app=slug, score="relevance") == [stitched.golden.trace_id]
    assert listed(client, app=slug, attr="gen_ai.response.model:meta-llama/Llama-3.1-8B") == [
        stitched.regenerated.trace_id, stitched.stopped.trace_id, stitched.golden.trace_id
    ]  # fmt: skip
    assert listed(client, app=slug, attr=f"http.route:{XSS_IMG}") == [stitched.xss.trace_id]
    BrowserSession.objects.filter(session_id="sess-cors").update(
        browser="Firefox", os="Linux", device_class="mobile"
    )
    for field, value in (("browser", "Firefox"), ("os", "Linux"), ("device", "mobile")):
        assert listed(client, app=slug, **{field: value}) == [stitched.cors], field


@pytest.mark.parametrize(
    "query, message",
    [
        ({"attr": "no-colon"}, "span attribute: key:value"),
        ({"device": "toaster"}, "unknown device class"),
        ({"min_client_ttft_ms": "inf"}, "a number of milliseconds"),
        ({"q": "x" * 5000, "score": "s" * 5000, "browser": XSS_SCRIPT}, "No traces match."),
    ],
)
def test_a_bad_filter_on_the_page_is_a_form_error(stitched, alice, query, message):
    r = logged_in(alice).get("/reports/traces", {"app": stitched.app.application.slug, **query})
    assert r.status_code == 200 and message in r.content.decode()
    assert XSS_SCRIPT not in r.content.decode()


def test_the_trace_page_shows_its_scores_as_text(stitched, alice):
    post_score(stitched, stitched.xss.trace_id, "hallucination", 0.75, XSS_SCRIPT)
    post_score(
        stitched, stitched.xss.trace_id, "relevance", 1, XSS_IMG
    )  # names are [A-Za-z0-9_.:-]
    html = logged_in(alice).get(f"/reports/traces/{stitched.xss.trace_id}").content.decode()
    rows = re.findall(r'<tr class="score">(.*?)</tr>', html, re.S)
    assert len(rows) == 2
    assert "hallucination" in rows[0] and "0.75" in rows[0]
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1&lt;/script&gt;" in rows[0]
    assert "&lt;img src=x onerror=alert(1)&gt;" in rows[1]
    assert XSS_SCRIPT not in html and XSS_IMG not in html
    golden = logged_in(alice).get(f"/reports/traces/{stitched.golden.trace_id}").content.decode()
    assert "No scores for this trace" in golden


def newest_first(stitched: Stitched) -> list[str]:
    sessions = BrowserSession.objects.filter(app=stitched.app.application)
    return [
        str(pk) for pk in sessions.order_by("-last_seen_at", "-id").values_list("pk", flat=True)
    ]


def test_the_sessions_index_lists_the_newest_first_with_their_turns(stitched, alice):
    BrowserSession.objects.filter(session_id="sess-xss").update(user_id=XSS_IMG)
    client = logged_in(alice)
    html = client.get(f"/reports/sessions/?app={stitched.app.application.slug}").content.decode()
    assert re.findall(r'<tr data-session="(\d+)">', html) == newest_first(stitched)
    report = BrowserSession.objects.get(session_id="sess-report")
    row = text_of(html, f'data-session="{report.pk}"')
    # 3 turns in 1 conversation, none abandoned.
    assert re.search(r"\) 3 1 0 \d+ s$", row), row
    assert f'href="/reports/sessions/{report.pk}"' in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and XSS_IMG not in html
    assert client.get(f"/reports/sessions/{report.pk}").status_code == 200


def test_the_sessions_index_pages_by_cursor(stitched, alice, monkeypatch):
    from correlator.reports.pages import sessions

    monkeypatch.setattr(sessions, "PAGE_SIZE", 2)
    client = logged_in(alice)
    url = f"/reports/sessions/?app={stitched.app.application.slug}"
    seen = []
    while url:
        html = client.get(url).content.decode()
        seen += re.findall(r'<tr data-session="(\d+)">', html)
        found = re.search(r'rel="next" href="([^"]+)"', html)
        url = "/reports/sessions/" + found.group(1).replace("&amp;", "&") if found else ""
    assert seen == newest_first(stitched) and len(seen) == 3
    bad = f"/reports/sessions/?app={stitched.app.application.slug}&cursor=99999999999999999999_1"
    assert client.get(bad).status_code == 200  # a cursor out of range: the first page


def test_the_sessions_index_shows_the_range_asked_for(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    html = client.get(f"/reports/sessions/?app={slug}&range=1h").content.decode()
    assert len(re.findall(r'<tr data-session="', html)) == 3
    html = client.get(
        f"/reports/sessions/?app={slug}&since=2020-01-01T00:00&until=2020-01-02T00:00"
    ).content.decode()
    assert "No sessions were seen in this range." in html
    html = client.get(f"/reports/sessions/?app={slug}&range=1y").content.decode()
    assert "unknown range" in html and "last 7d" in html
