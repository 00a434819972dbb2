"""The report pages through Django's test client: login, visibility, escaping, the
CSP header, and the figures the stitched data gives."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from correlator.models import Trace, Turn
from rumserver.csp import POLICY
from rumserver.models import ApplicationMember, BrowserSession
from tests import factories
from tests.reports.conftest import XSS_IMG, XSS_SCRIPT, Stitched, make_user

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_urls(stitched: Stitched) -> list[str]:
    slug = stitched.app.application.slug
    session = BrowserSession.objects.get(session_id="sess-report")
    return [
        f"/reports/?app={slug}",
        f"/reports/traces?app={slug}",
        f"/reports/traces/{stitched.golden.trace_id}",
        f"/reports/sessions/{session.pk}",
        "/reports/sessions/sess-report",
        f"/reports/propagation?app={slug}",
        f"/reports/vitals/?app={slug}",
        f"/reports/errors/?app={slug}",
        f"/reports/sessions/?app={slug}",
    ]


def test_every_page_redirects_to_login_when_logged_out(client, stitched):
    for url in page_urls(stitched):
        r = client.get(url)
        assert r.status_code == 302, url
        assert r["Location"].startswith("/accounts/login/?next=/reports/"), url


def test_the_login_page_logs_in_and_returns_to_the_page(client, alice):
    r = client.get("/accounts/login/?next=/reports/traces")
    assert r.status_code == 200 and b'name="password"' in r.content
    r = client.post("/accounts/login/", {"username": "alice", "password": "correct horse battery staple",
                                         "next": "/reports/traces"})  # fmt: skip
    assert r.status_code == 302 and r["Location"] == "/reports/traces"
    assert client.get("/reports/traces").status_code == 200


def test_every_page_renders_for_a_member_with_the_csp_header(stitched, alice):
    client = logged_in(alice)
    for url in page_urls(stitched):
        r = client.get(url)
        assert r.status_code == 200, url
        assert r["Content-Security-Policy"] == POLICY, url
        body = r.content.decode()
        assert "<script" not in body and ' style="' not in body, url


def test_csp_is_on_the_login_and_admin_pages_too(client):
    assert client.get("/accounts/login/")["Content-Security-Policy"] == POLICY
    assert client.get("/admin/login/")["Content-Security-Policy"] == POLICY


def test_a_view_that_sets_its_own_policy_keeps_it(rf):
    from django.http import HttpResponse

    from rumserver.csp import ContentSecurityPolicyMiddleware

    own = HttpResponse("<p>demo</p>")
    own["Content-Security-Policy"] = "default-src 'self' 'unsafe-inline'"
    assert (
        ContentSecurityPolicyMiddleware(lambda request: own)(rf.get("/demo/"))[
            "Content-Security-Policy"
        ]
        == "default-src 'self' 'unsafe-inline'"
    )
    json_response = HttpResponse("{}", content_type="application/json")
    assert "Content-Security-Policy" not in ContentSecurityPolicyMiddleware(
        lambda request: json_response
    )(rf.get("/api/v1/metrics"))


def test_a_user_of_another_application_sees_none_of_its_data(stitched, bob):
    client = logged_in(bob)
    for url in page_urls(stitched):
        if "?app=" in url:
            assert client.get(url).status_code == 404, url
        elif "/traces/" in url or "/sessions/" in url:
            assert client.get(url).status_code == 404, url
    # Their own pages show only their own application.
    r = client.get("/reports/traces")
    assert r.status_code == 200
    assert stitched.golden.trace_id.encode() not in r.content
    assert stitched.app.application.slug.encode() not in r.content


def test_staff_see_every_application(stitched):
    client = logged_in(make_user("root", staff=True))
    assert client.get(f"/reports/traces/{stitched.golden.trace_id}").status_code == 200


def test_hostile_values_are_shown_as_text(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    session = BrowserSession.objects.get(session_id="sess-report")
    for url in [f"/reports/?app={slug}", f"/reports/traces?app={slug}",
                f"/reports/traces/{stitched.xss.trace_id}", f"/reports/sessions/{session.pk}",
                "/reports/sessions/sess-xss"]:  # fmt: skip
        body = client.get(url).content.decode()
        assert XSS_IMG not in body and "<script>" not in body and "<img" not in body, url
    body = client.get(f"/reports/traces/{stitched.xss.trace_id}").content.decode()
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
    assert XSS_SCRIPT not in client.get(f"/reports/sessions/{session.pk}").content.decode()


def text_of(html: str, marker: str) -> str:
    """The text of the element carrying ``marker`` (an attribute), tags removed."""
    found = re.search(rf"<[^>]*{re.escape(marker)}[^>]*>(.*?)</(?:div|tr)>", html, re.S)
    assert found, marker
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def test_the_overview_shows_the_windows_figures(stitched, alice):
    html = logged_in(alice).get(f"/reports/?app={stitched.app.application.slug}").content.decode()
    assert text_of(html, 'data-figure="turns"').startswith("5 ")
    assert text_of(html, 'data-figure="sessions"').startswith("3 ")
    # Client TTFT of the golden turns is 620 ms, the gateway's 520 ms, vLLM's 450 ms.
    assert text_of(html, 'data-metric="client_ttft_ms"').split()[-4] == "620"
    assert "520 ms" in text_of(html, 'data-metric="server_ttft_ms"')
    assert "450 ms" in text_of(html, 'data-metric="model_ttft_ms"')
    assert "20.0%" in text_of(html, 'data-figure="error_rate"')
    assert html.count("<svg") >= 7
    for label in ("By model", "By browser", "By os", "By device class"):
        assert label in html
    assert "meta-llama/Llama-3.1-8B" in html


def test_the_trace_list_filters_and_links(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    html = client.get(f"/reports/traces?app={slug}").content.decode()
    for trace in Trace.objects.all():
        assert f'href="/reports/traces/{trace.trace_id}?app={slug}"' in html
    html = client.get(f"/reports/traces?app={slug}&outcome=stopped").content.decode()
    assert stitched.stopped.trace_id in html and stitched.golden.trace_id not in html
    html = client.get(f"/reports/traces?app={slug}&min_ttft=600&range=24h").content.decode()
    assert stitched.golden.trace_id in html and stitched.cors not in html
    html = client.get(f"/reports/traces?app={slug}&min_ttft=1000").content.decode()
    assert "No traces match." in html
    html = client.get(f"/reports/traces?app={slug}&min_ttft=fast").content.decode()
    assert "a number of milliseconds" in html


def test_the_trace_list_pages_by_cursor(stitched, alice, monkeypatch):
    from correlator.reports.pages import traces

    monkeypatch.setattr(traces, "PAGE_SIZE", 2)
    client = logged_in(alice)
    url = f"/reports/traces?app={stitched.app.application.slug}"
    seen = []
    while url:
        html = client.get(url).content.decode()
        seen += re.findall(r'<tr data-trace="([0-9a-f]{32})">', html)
        found = re.search(r'rel="next" href="([^"]+)"', html)
        url = "/reports/traces" + found.group(1).replace("&amp;", "&") if found else ""
    expected = list(Trace.objects.order_by("-start_ms", "-id").values_list("trace_id", flat=True))
    assert seen == expected and len(seen) == 6


def test_the_trace_page_shows_the_waterfall_marks_and_every_attribute(stitched, alice):
    html = logged_in(alice).get(f"/reports/traces/{stitched.golden.trace_id}").content.decode()
    assert html.count('class="span-row"') == 4  # browser, gateway, its client span, vLLM
    for mark in ("client first token", "server first token", "model first token"):
        assert f'data-mark="{mark}"' in html
    assert "client first token 620 ms" in html
    for part in ("client + network: 100 ms", "gateway: 70 ms", "queue: 30 ms",
                 "model: 420 ms"):  # fmt: skip
        assert part in html
    for attribute in ("gen_ai.latency.time_in_queue", "gen_ai.usage.prompt_tokens",
                      "gen_ai.request.model", "llmrum.clock_skew_ms", "service.name"):  # fmt: skip
        assert f"<th>{attribute}</th>" in html or f"<th>resource {attribute}</th>" in html
    event = re.search(r"<th>event first_token</th><td>\+([\d.,]+) ms</td>", html)
    assert event and 540 <= float(event.group(1)) <= 580  # 560 ms after the browser sent
    turn = Turn.objects.get(span_id=stitched.golden.browser_span)
    assert f'href="/reports/sessions/{turn.session_id}"' in html


def test_an_application_with_no_data_yet_shows_the_snippet_to_paste(stitched, alice):
    empty = factories.make_app(XSS_IMG).application
    ApplicationMember.objects.create(application=empty, user=alice)
    client = logged_in(alice)
    html = client.get(f"/reports/?app={empty.slug}").content.decode()
    assert 'id="getting-started"' in html and XSS_IMG not in html  # the name escaped
    assert f"key: &quot;{empty.public_key}&quot;" in html
    assert "chatUrls: [/\\/v1\\/chat\\/completions/, &quot;/api/chat&quot;]" in html
    assert "endpoint: &quot;http://testserver&quot;" in html
    # Once a browser has reported, the hint is gone.
    with_data = client.get(f"/reports/?app={stitched.app.application.slug}").content.decode()
    assert 'id="getting-started"' not in with_data


def test_the_trace_page_links_a_regenerated_turn_and_its_regeneration(stitched, alice):
    client, slug = logged_in(alice), stitched.app.application.slug
    stopped = client.get(f"/reports/traces/{stitched.stopped.trace_id}").content.decode()
    later = f"/reports/traces/{stitched.regenerated.trace_id}?app={slug}"
    assert f'<a class="regenerated-by" href="{later}">regenerated later</a>' in stopped
    again = client.get(later).content.decode()
    earlier = f"/reports/traces/{stitched.stopped.trace_id}?app={slug}"
    assert f'<a class="regenerates" href="{earlier}">regenerates an earlier turn</a>' in again


def test_every_spans_attributes_are_collapsed_until_opened(stitched, alice):
    html = logged_in(alice).get(f"/reports/traces/{stitched.golden.trace_id}").content.decode()
    assert html.count('<details class="span ') == 4 and "<details open" not in html


def test_the_session_page_lists_turns_and_actions_in_order(stitched, alice):
    html = logged_in(alice).get("/reports/sessions/sess-report").content.decode()
    rows = re.findall(r'<tr class="(turn|event \w+)"', html)
    assert rows == ["turn", "turn", "event action", "turn", "event feedback"]
    assert "regenerated" in html and "(regenerate)" in html
    assert "value=down" in html


def test_the_propagation_page_names_causes_and_fixes(stitched, alice):
    html = (
        logged_in(alice)
        .get(f"/reports/propagation?app={stitched.app.application.slug}")
        .content.decode()
    )
    row = text_of(html, f'data-app="{stitched.app.application.slug}"')
    # 5 turns, 4 linked (the CORS failure is not), one server-only trace.
    assert row.split()[-5:] == ["5", "4", "80.0%", "1", "1"]
    assert 'data-cause="cors_preflight_failed"' in html
    assert "Access-Control-Allow-Headers" in html
    assert 'data-cause="no_traceparent_from_browser"' in html
    assert stitched.cors in html and stitched.server_only in html
    assert stitched.golden.trace_id not in html


def test_a_bad_range_falls_back_and_says_why(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    html = client.get(f"/reports/?app={slug}&since=yesterday").content.decode()
    assert "since and until must be dates" in html and "last 24h" in html
    html = client.get(f"/reports/?app={slug}&range=1y").content.decode()
    assert "unknown range" in html


def test_a_custom_range_is_kept_in_the_form(stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    html = client.get(
        f"/reports/?app={slug}&since=2020-01-01T00:00&until=2020-01-02T00:00"
    ).content.decode()
    assert 'value="2020-01-01T00:00:00"' in html
    assert text_of(html, 'data-figure="turns"').startswith("0 ")


def test_a_user_without_applications_is_told_how_to_get_one(db):
    client = logged_in(make_user("newcomer"))
    for url in ("/reports/", "/reports/traces", "/reports/propagation"):
        r = client.get(url)
        assert r.status_code == 200 and b"not a member of any application" in r.content, url


@pytest.mark.parametrize(
    "query",
    [
        "cursor=not-a-cursor",
        "cursor=1e999_5",
        "min_client_ttft_ms=fast",
        "min_client_ttft_ms=-1e400",
        "outcome=%3Cscript%3E",
        "model=" + "x" * 5000,
        "since=2020-13-45T99:99",
    ],
)
def test_hostile_trace_list_queries_answer_without_a_server_error(stitched, alice, query):
    """Query strings are typed by hand and by scanners: every one gets a page (or a
    404 for an application that is not the user's), never a 500."""
    slug = stitched.app.application.slug
    r = logged_in(alice).get(f"/reports/traces?app={slug}&{query}")
    assert r.status_code in (200, 404), (query, r.status_code)
    assert b"<script>" not in r.content.split(b"</head>", 1)[-1].replace(b"<script src=", b"")


def test_unknown_traces_and_sessions_are_404(stitched, alice):
    client = logged_in(alice)
    for url in ("/reports/traces/" + "f" * 32, "/reports/traces/%3Cimg%3E", "/reports/sessions/nope",
                "/reports/sessions/99999999999999999999"):  # fmt: skip
        assert client.get(url).status_code == 404, url


@pytest.mark.parametrize(
    "url",
    ["/reports/traces?app=%00", "/reports/?model=a%00b", "/reports/traces/ab%00cd",
     "/reports/sessions/%00", "/admin/rumserver/span/?q=%00", "/api/v1/traces?app=%00"],
)  # fmt: skip
def test_a_nul_in_the_url_is_a_400_not_a_database_error(stitched, alice, url):
    """PostgreSQL text cannot hold NUL: refused before any view queries with it."""
    alice.is_staff = alice.is_superuser = True
    alice.save()
    r = logged_in(alice).get(url)
    assert r.status_code == 400, url
    assert r.content == b"NUL characters are not allowed in the URL"
