"""The Web Vitals and JavaScript errors pages: p75 figures and error groups on known
data, beacons through the real endpoint to the pages, and hostile browser text
shown as text."""

from __future__ import annotations

import re
import secrets
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from correlator.analytics.event_rollups import EventAccumulator, EventFact
from correlator.analytics.figures import step_bounds
from correlator.analytics.sketches import bucket_of, bucket_value
from correlator.epoch import epoch_us
from correlator.reports.forms import TimeRange
from correlator.reports.pages import errors, vitals
from rumserver.csp import POLICY
from rumserver.models import BrowserSession
from tests import factories
from tests.reports.conftest import XSS_IMG, XSS_SCRIPT, make_user

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

CHROME_STACK = (
    "TypeError: Cannot read properties of undefined (reading 'id')\n"
    "    at renderTurn (https://chat.example.com/assets/app.js?v=3:120:17)\n"
    "    at https://chat.example.com/assets/app.js?v=3:88:5"
)
FIREFOX_STACK = "renderTurn@https://chat.example.com/assets/app.js:120:17\n@https://x/y.js:1:1"


# --- the figures, on known data --------------------------------------------------------


def sample(name: str, value: float, path: str = "/c", device: str = "desktop",
           minutes: float = 0, session: int = 1) -> EventFact:  # fmt: skip
    at = epoch_us(T0 + timedelta(minutes=minutes))
    return EventFact("vital", at, name, path, device, value, session)


def reports(facts: list[EventFact], window: TimeRange | None = None) -> vitals.Reports:
    """As ``window_events`` answers: by (point, name, place, device)."""
    points = step_bounds(window.since, window.until, window.step) if window else [(T0, T0)]
    out: vitals.Reports = defaultdict(EventAccumulator)
    for f in facts:
        at = max(i for i, (lo, _) in enumerate(points) if epoch_us(lo) <= f.at_us) if window else 0
        out[(at, f.name, f.place, f.device)].add(f)
    return out


def sketched(value: float) -> float:
    """A p75 as the histogram answers it: its bucket's value, within 1 %."""
    return bucket_value(bucket_of(value))


def test_p75_is_the_nearest_rank_within_one_percent():
    def p75(values: list[float]) -> float | None:
        measured = vitals.Measured()
        for value in values:
            measured.add(reports([sample("LCP", value)])[(0, "LCP", "/c", "desktop")])
        return measured.p75

    assert p75([400, 100, 300, 200]) == sketched(300)  # rank ceil(0.75 * 4) = 3
    assert p75([500, 100, 400, 200, 300]) == sketched(400)  # rank ceil(3.75) = 4
    assert p75([42]) == sketched(42) and abs(sketched(42) - 42) <= 0.42
    assert p75([]) is None


def test_it_splits_p75_by_page_and_device():
    samples = [sample("LCP", v) for v in (1000, 2000, 3000, 4000)]
    samples += [sample("LCP", v, device="mobile") for v in (5000, 6000)]
    samples += [sample("CLS", v) for v in (0.01, 0.3, 0.05)]
    samples += [sample("INP", 80, path="/settings")]
    rows = vitals.by_page_and_device(reports(samples))
    assert [(r["path"], r["device"], r["samples"]) for r in rows] == [
        ("/c", "desktop", 7), ("/c", "mobile", 2), ("/settings", "desktop", 1),
    ]  # fmt: skip
    cells = {c["name"]: c for c in rows[0]["cells"]}
    assert cells["LCP"] == {"name": "LCP", "value": vitals.fmt_vital("LCP", sketched(3000)),
                            "rating": "needs-improvement", "count": 4}  # fmt: skip
    assert cells["LCP"]["value"] == "3,012 ms"  # 3,000 within 1 %
    assert cells["CLS"]["value"] == "0.298" and cells["CLS"]["rating"] == "poor"
    assert cells["INP"]["value"] == "—" and cells["INP"]["count"] == 0
    mobile = {c["name"]: c for c in rows[1]["cells"]}
    assert mobile["LCP"]["value"] == "5,945 ms" and mobile["LCP"]["rating"] == "poor"
    assert rows[2]["cells"][1]["value"] == "81 ms" and rows[2]["cells"][1]["rating"] == "good"


def test_it_draws_p75_per_device_over_the_ranges_steps():
    window = TimeRange(T0, T0 + timedelta(hours=1), "1h", timedelta(minutes=5))
    samples = [sample("TTFB", v, minutes=1) for v in (100, 200, 300, 900)]
    samples += [sample("TTFB", 700, device="mobile", minutes=12)]
    samples += [sample("TTFB", 50, minutes=59.9)]
    steps = len(step_bounds(window.since, window.until, window.step))
    lines = {
        s.name: list(s.values) for s in vitals.over_time(reports(samples, window), steps)["TTFB"]
    }
    assert steps == 12
    assert lines["desktop"] == [sketched(300)] + [None] * 10 + [sketched(50)]
    assert lines["mobile"] == [None, None, sketched(700)] + [None] * 9


def test_the_page_path_leaves_out_query_and_fragment():
    assert vitals.page_path("https://chat.example.com/c/42?token=abc#top") == "/c/42"
    assert vitals.page_path("https://chat.example.com") == "/"
    assert vitals.page_path("http://[::1") == "(unparsable URL)"


def test_the_top_frame_is_the_first_place_in_the_stack():
    assert errors.top_frame(CHROME_STACK, None, None, None) == (
        "renderTurn (https://chat.example.com/assets/app.js:120:17)"
    )
    assert errors.top_frame(FIREFOX_STACK, None, None, None) == (
        "renderTurn@https://chat.example.com/assets/app.js:120:17"
    )
    # No stack (a cross-origin script's "Script error."): where the handler said.
    assert errors.top_frame(None, "https://x/app.js?v=9", 3, 14) == "https://x/app.js:3:14"
    assert errors.top_frame("", None, None, None) == ""


def error_row(message: str, frame: str, minutes: float, session: int) -> EventFact:
    return EventFact("error", epoch_us(T0 + timedelta(minutes=minutes)), message, frame,
                     "desktop", None, session)  # fmt: skip


def grouped(rows: list[EventFact]) -> list[errors.ErrorGroup]:
    merged: dict[tuple[str, str], EventAccumulator] = defaultdict(EventAccumulator)
    for row in rows:
        merged[(row.name, row.place)].add(row)
    return errors.group_errors(merged)


def test_errors_group_by_message_and_top_frame():
    rows = [
        error_row("TypeError: x", "a.js:1:1", 30, 3),
        error_row("TypeError: x", "b.js:9:9", 25, 1),
        error_row("TypeError: x", "a.js:1:1", 20, 1),
        error_row("TypeError: x", "a.js:1:1", 10, 2),
        error_row("TypeError: x", "a.js:1:1", 5, 1),
        error_row("RangeError", "", 1, 4),
    ]
    groups = grouped(rows)
    assert [(g.message, g.frame, g.count, g.session_count) for g in groups] == [
        ("TypeError: x", "a.js:1:1", 4, 3),
        ("TypeError: x", "b.js:9:9", 1, 1),  # as frequent as RangeError, seen later
        ("RangeError", "", 1, 1),
    ]
    first = groups[0]
    assert (first.first_seen, first.last_seen) == (T0 + timedelta(minutes=5),
                                                   T0 + timedelta(minutes=30))  # fmt: skip
    assert [pk for pk, _ in first.session_links] == [3, 1, 2]  # the latest first
    assert first.more_sessions == 0


def test_a_group_links_its_latest_sessions_and_counts_the_rest():
    rows = [error_row("E", "f", 100 - i, i) for i in range(8)]
    (group,) = grouped(rows)
    assert [pk for pk, _ in group.session_links] == [0, 1, 2, 3, 4]
    assert group.more_sessions == 3 and group.count == 8


# --- beacons to the pages --------------------------------------------------------------


def vital(name: str, value: float) -> dict[str, Any]:
    return {"type": "vital", "id": f"v-{secrets.token_hex(8)}", "ts": factories.now_ms(),
            "name": name, "value": value, "rating": None}  # fmt: skip


def js_error(message: str, stack: str | None) -> dict[str, Any]:
    return {"type": "error", "id": f"e-{secrets.token_hex(8)}", "ts": factories.now_ms(),
            "message": message, "stack": stack, "source": None, "lineno": None,
            "colno": None}  # fmt: skip


def send(client: Client, key: str, events: list[dict[str, Any]], *, session: str,
         url: str = "https://chat.example.com/c/1?x=1", ua: str = factories.CHROME_UA) -> None:  # fmt: skip
    r = client.generic(
        "POST", f"/rum/v1/beacon?key={key}",
        factories.encode(factories.batch(events, session={"id": session},
                                         page={"url": url, "referrer": ""})),
        content_type="text/plain", HTTP_ORIGIN=factories.CHAT_ORIGIN, HTTP_USER_AGENT=ua,
    )  # fmt: skip
    assert r.status_code == 202 and not r.json()["rejected"], r.content


@pytest.fixture
def reported(client: Client, db: Any) -> tuple[Any, User]:
    created = factories.make_app("Vitals")
    key = created.application.public_key
    send(client, key, [vital("LCP", v) for v in (1200, 1800, 2600, 5200)], session="sess-a")
    send(client, key, [vital("LCP", 3100), vital("CLS", 0.02)], session="sess-m",
         ua=factories.IPHONE_UA)  # fmt: skip
    send(client, key, [vital("TTFB", 90)], session="sess-a",
         url=f"https://chat.example.com/{XSS_IMG}?q={XSS_SCRIPT}")  # fmt: skip
    boom = js_error("TypeError: boom", CHROME_STACK)
    send(client, key, [boom, js_error("TypeError: boom", CHROME_STACK)], session="sess-a")
    send(client, key, [js_error("TypeError: boom", CHROME_STACK)], session="sess-m")
    send(client, key, [js_error(XSS_IMG, f"Error\n    at x ({XSS_SCRIPT}:1:2)")],
         session="sess-x")  # fmt: skip
    return created, make_user("vera", app=created)


def page(user: User, url: str, **query: str) -> str:
    client = Client()
    client.force_login(user)
    r = client.get(url, query)
    assert r.status_code == 200 and r["Content-Security-Policy"] == POLICY
    body = r.content.decode()
    assert "<script" not in body and ' style="' not in body
    return body


def row_text(html: str, marker: str) -> str:
    found = re.search(rf"<tr[^>]*{re.escape(marker)}[^>]*>(.*?)</tr>", html, re.S)
    assert found, marker
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def test_the_vitals_page_shows_p75_by_page_and_device(reported):
    created, user = reported
    body = page(user, "/reports/vitals/", app=created.application.slug)
    # p75 within 1 % (the histogram's bucket): 3,100 ms shows as 3,072 ms.
    lcp = vitals.fmt_vital("LCP", sketched(3100))
    assert re.search(rf'data-vital="LCP"><span class="value">{lcp}</span>', body), body
    desktop = row_text(body, 'data-path="/c/1" data-device="desktop"')
    # p75 of 4 reports: the 3rd, 2,600 ms
    assert desktop.startswith(f"/c/1 desktop {vitals.fmt_vital('LCP', sketched(2600))}"), desktop
    assert row_text(body, 'data-path="/c/1" data-device="mobile"').startswith(
        f"/c/1 mobile {lcp} — {vitals.fmt_vital('CLS', sketched(0.02))}"
    )
    assert body.count('<svg xmlns="http://www.w3.org/2000/svg" class="chart"') == 5
    assert 'aria-current="page">Vitals</a>' in body
    one_page = page(user, "/reports/vitals/", app=created.application.slug, path="/c/1")
    assert "p75 by device class on /c/1" in one_page


def test_the_errors_page_groups_and_links_sessions(reported):
    created, user = reported
    body = page(user, "/reports/errors/", app=created.application.slug)
    text = row_text(body, 'class="error-group"')
    assert text.startswith(
        "TypeError: boom renderTurn (https://chat.example.com/assets/app.js:120:17) 3 2"
    ), text
    for session_id in ("sess-a", "sess-m"):
        pk = BrowserSession.objects.get(session_id=session_id).pk
        assert f'href="/reports/sessions/{pk}?app={created.application.slug}"' in body
    assert 'aria-current="page">Errors</a>' in body
    pk = BrowserSession.objects.get(session_id="sess-a").pk
    client = Client()
    client.force_login(user)
    assert client.get(f"/reports/sessions/{pk}?app={created.application.slug}").status_code == 200


def test_hostile_messages_stacks_and_urls_are_shown_as_text(reported):
    created, user = reported
    for path in ("/reports/vitals/", "/reports/errors/"):
        body = page(user, path, app=created.application.slug)
        assert XSS_IMG not in body and "<img" not in body and "<script>" not in body, path
    body = page(user, "/reports/errors/", app=created.application.slug)
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    assert "&lt;/script&gt;&lt;script&gt;window.__pwned=1&lt;/script&gt;" in body
    body = page(user, "/reports/vitals/", app=created.application.slug)
    assert "/&lt;img src=x onerror=alert(1)&gt;" in body  # the path, not its query


def test_another_applications_member_sees_neither_page(reported):
    created, _ = reported
    client = Client()
    client.force_login(make_user("olga", app=factories.make_app("Other")))
    for path in ("/reports/vitals/", "/reports/errors/"):
        assert client.get(path, {"app": created.application.slug}).status_code == 404
        assert "TypeError: boom" not in client.get(path).content.decode()
    assert Client().get("/reports/errors/").status_code == 302


def test_reports_older_than_the_range_are_left_out(reported):
    created, user = reported
    since = (timezone.now() - timedelta(days=3)).isoformat()
    until = (timezone.now() - timedelta(days=2)).isoformat()
    body = page(user, "/reports/errors/", app=created.application.slug, since=since, until=until)
    assert "TypeError: boom" not in body and "No JavaScript errors in this range" in body
    body = page(user, "/reports/vitals/", app=created.application.slug, since=since, until=until)
    assert "No Web Vitals in this range" in body


def test_each_page_reads_its_rollups_and_events_in_a_few_queries(
    reported, django_assert_num_queries
):
    """The session and user, the applications, the dirty marks, the rollup rows, the
    raw reports of the edges and their sessions by key (the vitals page: for its table
    and again for its charts, which read every page's rows together; the errors page:
    and the linked sessions' ids): whatever the number of reports, groups and sessions."""
    created, user = reported
    client = Client()
    client.force_login(user)
    for url, queries in (("/reports/vitals/", 11), ("/reports/errors/", 8)):
        with django_assert_num_queries(queries):
            assert client.get(url, {"app": created.application.slug}).status_code == 200
