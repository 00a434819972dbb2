"""The trace list searched by a span attribute (``attr=key:value``), page after page:
on PostgreSQL read from the newest day partitions of the span table first
(``selectors._newest_with_attribute``), on SQLite from the plain table. Either way
the pages are the exact answer: every trace with a matching span once, newest first
by the trace's start (ties by id), across day boundaries, with a trace matching in
several spans, matches in the default partition (days without a partition of their
own) and spans a few hours off their trace's start."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from correlator import selectors
from correlator.models import Trace
from correlator.reports.pages import traces as traces_page
from rumserver.models import Span
from rumserver.partitions import partitions_ensure
from tests import factories
from tests.reports.conftest import make_user
from tests.reports.test_pages import logged_in

pytestmark = pytest.mark.django_db

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
ATTR = "gen_ai.usage.output_tokens"


@pytest.fixture
def month_of_partitions() -> None:
    """Yesterday to two days ahead and thirty days back (nothing on SQLite)."""
    today = datetime.now(UTC).date()
    partitions_ensure([today - timedelta(days=d) for d in range(-2, 32)])


class Store:
    def __init__(self) -> None:
        self.app = factories.make_app()
        self.now_ms = datetime.now(UTC).timestamp() * 1000
        self.matching: dict[str, set[str]] = {}  # str(value) -> trace ids
        self.count = 0

    def trace(self, start_ms: float, spans: list[tuple[float, Any]]) -> str:
        """A stitched trace starting at ``start_ms`` with a span at each time given,
        carrying ``ATTR`` with the value given (None: not at all)."""
        self.count += 1
        trace_id = f"{self.count:032x}"
        now = timezone.now()
        Trace.objects.create(
            app=self.app.application, trace_id=trace_id, state="final", start_ms=start_ms,
            end_ms=max(at for at, _ in spans) + 500, span_count=len(spans),
            last_received_at=now, stitched_at=now,
        )  # fmt: skip
        for n, (at_ms, value) in enumerate(spans):
            attributes = {"http.route": "/v1/chat", **({ATTR: value} if value is not None else {})}
            Span.objects.create(
                app=self.app.application, trace_id=trace_id, span_id=f"{self.count:08x}{n:08x}",
                name="chat", start_ns=round(at_ms * 1e6), end_ns=round((at_ms + 400) * 1e6),
                received_at=now, attributes=attributes,
            )  # fmt: skip
            if value is not None:
                self.matching.setdefault(str(value), set()).add(trace_id)
        return trace_id

    def exact(self, value: str = "537") -> list[str]:
        """The answer: the traces with a span of that value, newest first, ties by id."""
        matching = self.matching.get(value, set())
        rows = Trace.objects.filter(app=self.app.application, trace_id__in=matching)
        return list(rows.order_by("-start_ms", "-id").values_list("trace_id", flat=True))


def _month(store: Store) -> None:
    """Thirty days of traces, three matching a day (one at midnight, its spans on both
    sides of it; one matching in three spans, as text and as a number), non-matching
    ones between them, two matching traces at the same start (ties), one stored two
    years back and one next year (no partition: the default one), and one whose
    matching span starts twenty hours before the trace (a browser clock off)."""
    midnight = store.now_ms - store.now_ms % DAY_MS
    for day in range(30):
        base = midnight - day * DAY_MS
        store.trace(base - 2_000, [(base - 2_000, None), (base + 1_000, 537)])
        store.trace(base + 5 * HOUR_MS, [(base + 5 * HOUR_MS + n, v) for n, v in
                                         enumerate([537, "537", 537, 12])])  # fmt: skip
        store.trace(base + 7 * HOUR_MS, [(base + 7 * HOUR_MS, 536)])
        store.trace(base + 9 * HOUR_MS, [(base + 9 * HOUR_MS, 537)])
    tie = midnight - 3 * DAY_MS + 11 * HOUR_MS
    store.trace(tie, [(tie, 537)])
    store.trace(tie, [(tie, 537)])
    for far in (-730 * DAY_MS, 365 * DAY_MS):
        store.trace(midnight + far, [(midnight + far + 10, 537)])
    off = midnight - 12 * DAY_MS + 3 * HOUR_MS
    store.trace(off, [(off - 20 * HOUR_MS, 537), (off, None)])


def _pages(client: Client, slug: str, **query: str) -> list[list[str]]:
    """Every page of the trace list, following its next links."""
    pages, url = [], "/reports/traces"
    params: dict[str, str] | None = {"app": slug, **query}
    while url:
        r = client.get(url, params)
        assert r.status_code == 200, r.content
        html = r.content.decode()
        pages.append(re.findall(r'<tr data-trace="([0-9a-f]{32})">', html))
        found = re.search(r'rel="next" href="(\?[^"]+)"', html)
        url = "/reports/traces" + found.group(1).replace("&amp;", "&") if found else ""
        params = None
        assert len(pages) < 100
    return pages


def test_attribute_pages_are_the_exact_answer(month_of_partitions, monkeypatch):
    store = Store()
    _month(store)
    monkeypatch.setattr(traces_page, "PAGE_SIZE", 4)
    user = make_user("carol", app=store.app)
    client = logged_in(user)
    slug = store.app.application.slug
    pages = _pages(client, slug, attr=f"{ATTR}:537")
    shown = [trace_id for page in pages for trace_id in page]
    expected = store.exact()
    assert len(expected) == 30 * 3 + 2 + 2 + 1
    assert shown == expected  # in order, each once, none left out
    assert all(len(page) == 4 for page in pages[:-1])
    # The same order as the whole list filtered at once (the API's reading).
    whole = selectors.trace_list(user=user, app=store.app.application, attr=(ATTR, "537"))
    assert [t.trace_id for t in whole] == expected
    assert [t for p in _pages(client, slug, attr=f"{ATTR}:536") for t in p] == store.exact("536")
    assert _pages(client, slug, attr=f"{ATTR}:nothing") == [[]]


def test_attribute_pages_with_a_time_range_and_few_matches(month_of_partitions):
    store = Store()
    _month(store)
    user = make_user("erin", app=store.app)
    since = datetime.fromtimestamp((store.now_ms - 10 * DAY_MS) / 1000, UTC)
    until = datetime.fromtimestamp((store.now_ms - 4 * DAY_MS) / 1000, UTC)
    page = selectors.trace_page(user=user, app=store.app.application, limit=1000,
                                attr=(ATTR, "537"), since=since, until=until)  # fmt: skip
    exact = Trace.objects.filter(
        trace_id__in=store.matching["537"],
        start_ms__gte=since.timestamp() * 1000,
        start_ms__lt=until.timestamp() * 1000,
    ).order_by("-start_ms", "-id")
    assert [t.trace_id for t in page] == [t.trace_id for t in exact] and len(page) > 10
    # One matching trace in the month (a response id): found, alone.
    only = store.trace(store.now_ms - 20 * DAY_MS, [(store.now_ms - 20 * DAY_MS, "chatcmpl-1")])
    found = selectors.trace_page(user=user, app=store.app.application, limit=51,
                                 attr=(ATTR, "chatcmpl-1"))  # fmt: skip
    assert [t.trace_id for t in found] == [only]


@pytest.mark.postgres
def test_the_first_page_reads_the_newest_days_only(month_of_partitions):
    """A page of three of the newest matches reads the span partitions of the few
    newest days (and the default one), not the month's (scans of each partition, by
    its index or whole: a few rows a day here)."""
    store = Store()
    _month(store)
    user = make_user("frank", app=store.app)
    before = _scans()
    page = selectors.trace_page(user=user, app=store.app.application, limit=3,
                                attr=(ATTR, "537"))  # fmt: skip
    read = {name for name, scans in _scans().items() if scans > before.get(name, 0)}
    assert [t.trace_id for t in page] == store.exact()[:3]
    assert "rumserver_span_default" in read
    # Today, yesterday and the day before (and the empty days made ahead).
    today = f"rumserver_span_p{datetime.now(UTC):%Y%m%d}"
    assert len({name for name in read - {"rumserver_span_default"} if name <= today}) <= 3
    # The next page goes on from the last one, from the days around it.
    last = page[-1]
    before = _scans()
    after = selectors.trace_page(user=user, app=store.app.application, limit=3,
                                 before=(last.start_ms, last.pk), attr=(ATTR, "537"))  # fmt: skip
    assert [t.trace_id for t in after] == store.exact()[3:6]
    read = {name for name, scans in _scans().items() if scans > before.get(name, 0)}
    assert len({name for name in read - {"rumserver_span_default"} if name <= today}) <= 4


def _scans() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables "
            "WHERE relname LIKE %s",
            ["rumserver_span_%"],
        )
        return dict(cursor.fetchall())
