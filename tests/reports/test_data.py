"""The report pages' query parsing, formatting and page builders, called directly
(no HTTP)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.db import connection
from django.http import Http404
from django.test.utils import CaptureQueriesContext

from correlator.analytics import figures
from correlator.models import Trace, Turn
from correlator.reports import forms
from correlator.reports.format import fmt_ms, fmt_rate
from correlator.reports.pages import overview as overview_page
from correlator.reports.pages import propagation as propagation_page
from correlator.reports.pages import session as session_page
from correlator.reports.pages import trace as trace_page
from correlator.reports.pages import traces as traces_page
from tests.reports.conftest import Stitched, make_user

NOW = datetime(2026, 3, 1, 12, 34, 56, tzinfo=UTC)


def test_a_preset_range_ends_with_the_current_minute():
    window, errors = forms.time_range({"range": "1h"}, now=NOW)
    assert not errors
    assert window.until == datetime(2026, 3, 1, 12, 35, tzinfo=UTC)
    assert window.since == window.until - timedelta(hours=1)
    assert window.step == timedelta(minutes=5) and window.query() == {"range": "1h"}


def test_a_custom_range_gets_a_step_with_at_most_48_points():
    window, errors = forms.time_range(
        {"since": "2026-02-01T00:00", "until": "2026-02-03T00:00:00Z"}, now=NOW
    )
    assert not errors and window.preset == ""
    assert window.since == datetime(2026, 2, 1, tzinfo=UTC)
    assert window.step == timedelta(hours=1)
    assert (window.until - window.since) / window.step <= forms.MAX_POINTS


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"since": "not a date"}, "must be dates"),
        ({"since": "2026-02-02T00:00", "until": "2026-02-01T00:00"}, "before until"),
        ({"since": "2020-01-01T00:00"}, "at most 400 days"),
        ({"range": "5y"}, "unknown range"),
    ],
)
def test_a_bad_range_falls_back_to_the_default(params, error):
    window, errors = forms.time_range(params, now=NOW)
    assert error in errors[0]
    assert window.preset == "24h"


def span(span_id, parent="", start=0, role="service"):
    return SimpleNamespace(span_id=span_id, parent_span_id=parent, start_ns=start, role=role)


def test_spans_are_ordered_depth_first_under_their_parents():
    spans = [
        span("g", "b", 40, "gateway"), span("b", "", 0, "browser"), span("m", "c", 90, "model"),
        span("c", "g", 60, "gateway"), span("x", "gone", 10), span("g2", "b", 50, "gateway"),
    ]  # fmt: skip
    ordered = [(s.span_id, depth) for s, depth in trace_page.tree_order(spans)]
    assert ordered == [("b", 0), ("g", 1), ("c", 2), ("m", 3), ("g2", 1), ("x", 0)]


def test_a_parent_cycle_does_not_hang_and_keeps_every_span():
    spans = [span("a", "b", 0), span("b", "a", 1)]
    assert sorted(s.span_id for s, _ in trace_page.tree_order(spans)) == ["a", "b"]


def test_the_wait_is_split_into_network_gateway_queue_and_model():
    turn = Turn(client_ttft_ms=620, server_ttft_ms=520, model_ttft_ms=450, queue_ms=30,
                network_overhead_ms=100)  # fmt: skip
    assert trace_page.wait_parts(turn) == [
        ("client + network", 100), ("gateway", 70), ("queue", 30), ("model", 420)
    ]  # fmt: skip
    assert sum(v for _, v in trace_page.wait_parts(turn)) == turn.client_ttft_ms
    browser_only = Turn(client_ttft_ms=800)
    assert trace_page.wait_parts(browser_only) == [("client + network (no server spans)", 800)]


@pytest.mark.parametrize(
    ("value", "ms", "rate"),
    [(None, "—", "—"), (0.25, "0.2 ms", "25.0%"), (1234.5, "1,234 ms", "123450.0%")],
)
def test_values_are_formatted_for_reading(value, ms, rate):
    assert fmt_ms(value) == ms
    assert fmt_rate(value) == rate


@pytest.mark.django_db
def test_the_overview_reads_only_the_metrics_functions(stitched: Stitched, monkeypatch):
    """Every figure comes from window_breakdown / window_series / server_only (rollups
    at scale): with those answering from memory, the overview makes no query of its
    own. Bots are left out by default; the previous period is one more breakdown."""
    window, _ = forms.time_range({"range": "24h"}, now=datetime.now(tz=UTC))
    app = stitched.app.application
    answers = figures.window_breakdown(app=app, since=window.since, until=window.until,
                                       group_bys=list(overview_page.GROUPS))  # fmt: skip
    series = figures.window_series(app=app, since=window.since, until=window.until,
                                   step=window.step)  # fmt: skip
    server_only = figures.server_only(app=app, since=window.since, until=window.until)
    calls = []

    def fake_breakdown(*, app, since, until, group_bys, bots):
        calls.append(("window_breakdown", tuple(group_bys), since, until, bots))
        return answers

    def fake_series(*, app, since, until, step, bots):
        calls.append(("window_series", step, since, until, bots))
        return series

    def fake_server_only(*, app, since, until):
        calls.append(("server_only", since, until))
        return server_only

    monkeypatch.setattr(figures, "window_breakdown", fake_breakdown)
    monkeypatch.setattr(figures, "window_series", fake_series)
    monkeypatch.setattr(figures, "server_only", fake_server_only)
    with CaptureQueriesContext(connection) as queries:
        report = overview_page.overview(app=app, window=window)
    assert len(queries) == 0
    groups, day = tuple(overview_page.GROUPS), timedelta(days=1)
    assert ("window_breakdown", groups, window.since, window.until, False) in calls
    assert ("window_breakdown", ("device",), window.since - day, window.since, False) in calls
    assert ("window_series", timedelta(hours=1), window.since, window.until, False) in calls
    assert ("server_only", window.since, window.until) in calls
    assert len(series) == len(figures.step_bounds(window.since, window.until, window.step))
    cards = {f.key: f.value for f in report.cards}
    assert cards["turns"] == "5" and cards["input_tokens"] == "3,248"
    latency = {row["key"]: row for row in report.latencies}
    assert latency["client_ttft_ms"]["p50"] == "620 ms"
    assert latency["model_ttft_ms"]["p95"] == "450 ms"
    models = next(g for g in report.groups if g["key"] == "model")["rows"]
    assert {r["key"] for r in models} == {"meta-llama/Llama-3.1-8B", "<img src=x onerror=alert(1)>",
                                          "gpt-4o-mini"}  # fmt: skip


@pytest.mark.django_db
def test_the_trace_page_reads_a_fixed_number_of_queries(stitched: Stitched):
    user = make_user("alice", app=stitched.app)
    for golden in (stitched.golden, stitched.xss):
        with CaptureQueriesContext(connection) as queries:
            trace = trace_page.find_trace(user=user, trace_id=golden.trace_id)
            trace_page.trace_view(trace)
        assert len(queries) == 3, [q["sql"] for q in queries]  # the trace, spans, scores
        assert all("LIMIT" in q["sql"] for q in queries)


@pytest.mark.django_db
def test_list_session_and_propagation_queries_are_limited(stitched: Stitched):
    user = make_user("alice", app=stitched.app)
    app = stitched.app.application
    window, _ = forms.time_range({}, now=datetime.now(tz=UTC))
    with CaptureQueriesContext(connection) as queries:
        rows, cursor = traces_page.trace_rows(user=user, app=app, filters=forms.TraceFilters(),
                                       cursor=None)  # fmt: skip
        session = session_page.find_session(user=user, key="sess-report")
        session_page.session_view(session)
        propagation_page.unlinked_traces(app=app, window=window)
    assert len(rows) == 6 and cursor == ""
    # The trace list's and the propagation page's traces, then their turns by key
    # (selectors.with_turns); the session and its page's turns and events.
    assert len(queries) == 7
    assert all("LIMIT" in q["sql"] for q in queries), [q["sql"] for q in queries]
    assert "COUNT(" not in " ".join(q["sql"] for q in queries).upper()


@pytest.mark.django_db
def test_lookups_outside_the_users_applications_are_404(stitched: Stitched):
    outsider = make_user("mallory")
    with pytest.raises(Http404):
        trace_page.find_trace(user=outsider, trace_id=stitched.golden.trace_id)
    with pytest.raises(Http404):
        session_page.find_session(user=outsider, key="sess-report")
    with pytest.raises(Http404):
        forms.choose_app(user=outsider, slug=stitched.app.application.slug)
    assert forms.choose_app(user=outsider, slug=None) == ([], None)


@pytest.mark.django_db
def test_the_propagation_summary_counts_by_cause(stitched: Stitched):
    window, _ = forms.time_range({}, now=datetime.now(tz=UTC))
    summary = propagation_page.propagation_summary(app=stitched.app.application, window=window)
    assert (summary["turns"], summary["linked"], summary["server_only"]) == (5, 4, 1)
    causes = {c["cause"]: c["count"] for c in summary["causes"]}
    assert causes == {"cors_preflight_failed": 1, "no_traceparent_from_browser": 1}
    assert all(c["advice"] for c in summary["causes"])
    assert Trace.objects.filter(linked=False).count() == 2
