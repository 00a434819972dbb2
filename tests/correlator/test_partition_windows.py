"""The stitch reads a trace's raw rows from the day partitions around it only
(correlator.stitch.load: the sweep gives each trace the time its data arrived, widened
by the stitched trace's own time and the browser-clock slack), and what that window
misses (a clock days off) by a probe of every partition: each day costs a probe of
its own index, so unbounded reads grew with the days kept (tens of times slower at
a month). Same answers either way.

PostgreSQL only (SQLite has no partitions): skipped elsewhere, saying so."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from correlator import selectors
from correlator.models import Trace, Turn
from correlator.stitch import load
from correlator.stitch.sweep import sweep_run
from rumserver.ingest.dirty import mark_dirty
from rumserver.partitions import partitions_ensure
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

DAY_MS = 86_400_000


@pytest.fixture
def month_of_partitions() -> None:
    today = datetime.now(UTC).date()
    partitions_ensure([today - timedelta(days=d) for d in range(-2, 32)])


def _read_since(before: dict[str, int], table: str) -> set[str]:
    """The partitions of ``table`` read by index since ``before`` (``_index_scans``),
    in this transaction."""
    return {name for name, scans in _index_scans(table).items() if scans > before.get(name, 0)}


def _delivered(client: Any, created: Any, *, days_ago: float) -> GoldenTurn:
    golden = GoldenTurn(t0=time.time() * 1000 - days_ago * DAY_MS, server_timing=True)
    send_beacon(client, created.application.public_key, golden.beacon())
    send_otlp(client, created.ingest_token, golden.gateway_request())
    return golden


def test_a_trace_is_read_from_the_days_around_it(client: Any, month_of_partitions: None) -> None:
    created = factories.make_app()
    golden = _delivered(client, created, days_ago=0)
    key = (created.application.pk, golden.trace_id)
    now_ms = time.time() * 1000
    tables = ("rumserver_browserevent", "rumserver_span")
    before = {table: _index_scans(table) for table in tables}  # the ingest's own reads
    batch = load.load_batch([key], {key: (now_ms, now_ms)})
    assert batch.turns[key].span_id == golden.browser_span and len(batch.spans[key]) >= 2
    # Today, the days within a day's clock slack of it, the default partition: no more
    # than five of the thirty-odd days, for each table.
    for table in tables:
        scanned = _read_since(before[table], table)
        assert 1 <= len(scanned) <= 5, scanned
    unbounded = load.load_batch([key])
    assert unbounded.turns == batch.turns and unbounded.spans == batch.spans
    assert unbounded.clock_samples == batch.clock_samples


def test_data_outside_its_window_is_still_found(client: Any, month_of_partitions: None) -> None:
    """A turn sent ten days ago arrives now (a page left open offline): its events lie
    far from the window of its arrival; the stitch finds them all the same, and finds
    them again when a score re-stitches the trace a day later."""
    created = factories.make_app()
    golden = _delivered(client, created, days_ago=10)
    sweep_run(now=timezone.now(), finalize_all=True)
    turn = Turn.objects.get(trace__trace_id=golden.trace_id)
    first = (turn.client_ttft_ms, turn.span_id, Trace.objects.get(pk=turn.trace_id).span_count)
    assert first[0] == pytest.approx(620, abs=1)  # as the browser measured it
    with connection.cursor() as cursor:  # as a score a day later does
        mark_dirty(cursor, app_id=created.application.pk, trace_ids=[golden.trace_id],
                   now=timezone.now() + timedelta(days=1))  # fmt: skip
    sweep_run(now=timezone.now() + timedelta(days=1), finalize_all=True)
    again = Turn.objects.get(trace__trace_id=golden.trace_id)
    assert (again.client_ttft_ms, again.span_id, again.trace.span_count) == first


def test_a_traces_page_reads_its_spans_from_its_days(
    client: Any, month_of_partitions: None
) -> None:
    created = factories.make_app()
    golden = _delivered(client, created, days_ago=0)
    sweep_run(now=timezone.now(), finalize_all=True)
    trace = Trace.objects.get(trace_id=golden.trace_id)
    before = _index_scans("rumserver_span")
    spans = selectors.trace_spans(trace)
    assert len(spans) == trace.span_count >= 3
    assert 1 <= len(_read_since(before, "rumserver_span")) <= 5
    # A stored time that misses its spans (a clock far off): every day is read then.
    trace.start_ms = trace.end_ms = trace.start_ms + 20 * DAY_MS
    assert [s.pk for s in selectors.trace_spans(trace)] == [s.pk for s in spans]


def test_feedback_is_read_from_the_turns_days_on(client: Any, month_of_partitions: None) -> None:
    created = factories.make_app()
    golden = _delivered(client, created, days_ago=0)
    down = {"type": "feedback", "id": "fb-1", "ts": golden.browser(5000), "value": "down",
            "turn_span_id": golden.browser_span, "trace_id": golden.trace_id}  # fmt: skip
    send_beacon(client, created.application.public_key, factories.batch([down]))
    before = _index_scans("rumserver_browserevent")
    found = selectors.feedback_events(
        app_id=created.application.pk, span_ids={golden.browser_span}, since_ms=golden.t0
    )
    assert [(kind, span) for kind, _, span, _ in found] == [("feedback", golden.browser_span)]
    read = _read_since(before, "rumserver_browserevent")
    assert 1 <= len(read) <= 12, read  # today on (the days made ahead), not the month


def _index_scans(table: str) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, idx_scan FROM pg_stat_xact_user_tables WHERE relname LIKE %s",
            [f"{table}_%"],
        )
        return dict(cursor.fetchall())
