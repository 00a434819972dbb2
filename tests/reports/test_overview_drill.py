"""The overview's drill-down links (chart points, bars, breakdown rows), its
comparison with the previous period, and bots left out of its headline figures
unless asked: through Django's test client on stitched data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from html import unescape
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from correlator.analytics import rollups
from correlator.models import Turn
from correlator.reports import charts
from correlator.reports.format import change
from correlator.stitch.sweep import sweep_run
from rumserver.models import BrowserSession
from tests.correlator.test_rollups_server_only import api_call
from tests.reports.conftest import XSS_IMG, Stitched
from tests.reports.test_charts import HOSTILE, SVG

pytestmark = pytest.mark.django_db


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def make_bot(session_id: str) -> None:
    """Flag a session as a bot after the fact, and rebuild the rollups it is in (a
    session's device class is fixed at its first beacon in production)."""
    BrowserSession.objects.filter(session_id=session_id).update(device_class="bot")
    now = timezone.now()
    minutes = {(t.app_id, "minute", rollups.minute_of(t.t_send_ms)) for t in Turn.objects.all()}
    rollups.rollups_mark(minutes, now=now)
    rollups.rollups_refresh(now=now)


def iso(epoch_ms: float) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def card(html: str, key: str) -> str:
    found = re.search(rf'data-figure="{key}">(.*?)</div>', html, re.S)
    assert found, key
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", found.group(1))).strip()


def chart(html: str, title: str) -> ET.Element:
    found = re.search(r'(<svg[^>]*aria-label="' + re.escape(title) + r'".*?</svg>)', html, re.S)
    assert found, title
    return ET.fromstring(found.group(1))


def links(root: ET.Element) -> list[str]:
    return [a.get("href") or "" for a in root.iter(f"{SVG}a")]


# --- the chart module ------------------------------------------------------------------


def test_chart_points_and_bars_link_with_escaped_addresses():
    hostile_link = f"/reports/traces?model={HOSTILE}"
    svg = charts.line_chart(
        title="t", x_labels=["a", "b", "c"], series=[charts.Series("s", [1, None, 3])],
        links=["/one?x=1&y=2", "/two", hostile_link],
    )  # fmt: skip
    assert "<img" not in svg and "</script>" not in svg
    root = ET.fromstring(svg)  # well-formed: the & of a query is escaped
    assert links(root) == ["/one?x=1&y=2", hostile_link]  # no link for the missing point
    for a in root.iter(f"{SVG}a"):
        circles = list(a.iter(f"{SVG}circle"))
        # A wider invisible target (painted, so it takes the click) and the dot.
        assert [c.get("r") for c in circles] == ["8", "2.5"]
        assert circles[0].get("fill-opacity") == "0"
    bars = ET.fromstring(
        charts.bar_chart(
            title="b", labels=["x", "y"], series=[charts.Series("n", [2, 0])], links=["/x", "/y"]
        )  # fmt: skip
    )
    assert links(bars) == ["/x"]  # a zero draws no bar, so no link
    plain = ET.fromstring(
        charts.line_chart(title="t", x_labels=["a"], series=[charts.Series("s", [1])])
    )
    assert links(plain) == [] and len(list(plain.iter(f"{SVG}circle"))) == 1


@pytest.mark.parametrize(
    ("now", "before", "points", "expected"),
    [(1.2, 0.9, False, "+33%"), (2, 3, False, "-33%"), (5, 5, False, "±0%"), (1, 0, False, ""),
     (None, 3, False, ""), (3, None, False, ""), (0.25, 0.2, True, "+5.0 pts"),
     (0.1, 0.1, True, "±0 pts")],
)  # fmt: skip
def test_change_from_the_previous_period(now, before, points, expected):
    assert change(now, before, points=points) == expected


# --- the page --------------------------------------------------------------------------


def test_every_client_ttft_point_leads_to_the_traces_of_its_bucket(stitched: Stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    html = client.get(f"/reports/?app={slug}&range=1h").content.decode()
    root = chart(html, "Time to first token, p50: client next to server and model")
    hrefs = links(root)
    assert hrefs, "no point links"
    buckets = set()
    for href in set(hrefs):
        url = urlsplit(href)
        query = parse_qs(url.query)
        assert url.path == "/reports/traces" and query["app"] == [slug]
        since = datetime.fromisoformat(query["since"][0])
        until = datetime.fromisoformat(query["until"][0])
        assert until - since <= timedelta(minutes=5)  # the 1h range's step
        buckets.add((since, until))
    golden_at = datetime.fromtimestamp(stitched.golden.t0 / 1000, UTC)
    bucket = next(b for b in buckets if b[0] <= golden_at < b[1])
    href = next(
        h
        for h in hrefs
        if datetime.fromisoformat(parse_qs(urlsplit(h).query)["since"][0]) == bucket[0]
    )
    listed = client.get(href).content.decode()
    assert stitched.golden.trace_id in listed
    # The filter form shows the bucket it was opened with.
    assert f'value="{bucket[0]:%Y-%m-%dT%H:%M:%S}"' in listed


def test_the_turns_bars_and_every_breakdown_row_link_to_their_traces(stitched: Stitched, alice):
    client = logged_in(alice)
    slug = stitched.app.application.slug
    html = client.get(f"/reports/?app={slug}").content.decode()
    assert links(chart(html, "Turns"))
    model_links = links(chart(html, "Tokens in and out per model"))
    assert any(parse_qs(urlsplit(h).query).get("model") == [XSS_IMG] for h in model_links)
    cost = re.search(r'id="cost">(.*?)</table>', html, re.S)
    assert cost and "model=meta-llama%2FLlama-3.1-8B" in cost.group(1)
    rows = re.findall(r'<tr><th scope="row"><a href="([^"]+)">', html)
    queries = [parse_qs(urlsplit(unescape(h)).query) for h in rows]
    assert any(q.get("model") == ["meta-llama/Llama-3.1-8B"] for q in queries)
    assert any(
        q.get("model") == [XSS_IMG] for q in queries
    )  # escaped in the page, whole in the link
    assert any("browser" in q for q in queries) and any("os" in q for q in queries)
    assert any("device" in q for q in queries)
    assert XSS_IMG not in html and "<img" not in html
    for q in queries:
        assert q["app"] == [slug] and "since" in q and "until" in q
    # Following the model row lists that model's traces only.
    llama = next(unescape(h) for h, q in zip(rows, queries, strict=True)
                 if q.get("model") == ["meta-llama/Llama-3.1-8B"])  # fmt: skip
    listed = client.get(llama).content.decode()
    assert stitched.golden.trace_id in listed and stitched.xss.trace_id not in listed


def test_headline_figures_beside_the_previous_period(stitched: Stitched, alice):
    """golden, stopped and regenerated (t0, +10 s, +20 s) in the previous minute; the
    hostile turn and the CORS one (+30 s, +40 s) in this one."""
    t0 = stitched.golden.t0
    client = logged_in(alice)
    query = f"app={stitched.app.application.slug}&since={iso(t0 + 25_000)}&until={iso(t0 + 85_000)}"
    html = client.get(f"/reports/?{query.replace('+', '%2B')}").content.decode()
    assert card(html, "turns") == "2 Turns prev 3, -33%"
    assert card(html, "error_rate").startswith("50.0% Error rate prev 0.0%, +50.0 pts")
    previous = re.search(r'data-previous="client_ttft_ms">(.*?)</tr>', html, re.S)
    assert previous and "620 ms" in previous.group(1)
    assert "compared with the previous period" in html


@pytest.mark.parametrize("exact_turns", [0, 10**9])  # rollups, then the exact answer
def test_bots_are_left_out_of_the_headline_figures_unless_asked(
    stitched: Stitched, alice, settings, exact_turns
):
    settings.LLMRUM_METRICS_EXACT_TURNS = exact_turns
    make_bot("sess-xss")
    client = logged_in(alice)
    slug = stitched.app.application.slug
    html = client.get(f"/reports/?app={slug}").content.decode()
    assert card(html, "turns").startswith("4 Turns")
    assert card(html, "sessions").startswith("2 Sessions")
    assert "Bots are left out" in html and "(1 turn in this range)" in html
    # The device table still shows the bot's row.
    assert re.search(r'data-group="device".*?>bot</a>', html, re.S)
    toggle = re.search(r'class="bots-toggle" href="([^"]+)"', html)
    assert toggle and "bots=include" in toggle.group(1)
    html = client.get(f"/reports/{unescape(toggle.group(1))}").content.decode()
    assert card(html, "turns").startswith("5 Turns")
    assert "Bots are counted" in html
    assert '<input type="hidden" name="bots" value="include">' in html
    back = re.search(r'class="bots-toggle" href="([^"]+)"', html)
    assert back and "bots" not in back.group(1)


def test_an_unknown_bots_value_is_said_and_bots_stay_out(stitched: Stitched, alice):
    make_bot("sess-xss")
    r = logged_in(alice).get(f"/reports/?app={stitched.app.application.slug}&bots=%3Cb%3Eall")
    assert r.status_code == 200
    html = r.content.decode()
    assert "unknown bots value" in html and "&lt;b&gt;all" in html and "<b>all" not in html
    assert card(html, "turns").startswith("4 Turns")


def test_server_only_traffic_has_its_own_section(stitched: Stitched, alice, client):
    """The fixture's lone gateway trace (no model, no TTFT) and an API client's call
    with a hostile model name: counted, timed and split by model, escaped."""
    api_call(client, stitched.app.ingest_token, model=XSS_IMG, ttft_s=0.7,
             at_ns=int((stitched.golden.t0 + 60_000) * 1e6))  # fmt: skip
    sweep_run(now=timezone.now(), finalize_all=True)
    html = logged_in(alice).get(f"/reports/?app={stitched.app.application.slug}").content.decode()
    assert card(html, "server_only_traces") == "2 Server-only traces"
    p50 = re.match(r"([\d,]+) ms", card(html, "server_only_ttft_p50"))
    assert p50 and float(p50.group(1).replace(",", "")) == pytest.approx(700, rel=0.01)
    table = re.search(r'id="server-only-models">(.*?)</table>', html, re.S)
    assert table
    rows = re.findall(r'<th scope="row">(.*?)</th><td class="traces">(\d+)</td>', table.group(1))
    assert rows == [("(unknown)", "1"), ("&lt;img src=x onerror=alert(1)&gt;", "1")]
    assert XSS_IMG not in html and "<img" not in html
    # The turn figures leave them out: five turns as before.
    assert card(html, "turns").startswith("5 Turns")
