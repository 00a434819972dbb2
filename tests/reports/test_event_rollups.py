"""The vitals and errors pages from their rollups (``correlator.analytics.event_rollups``):
reports sent through the real beacon store at chosen receive times, rolled up by the
sweep's refresh, and each page's figures checked against the exact answer computed
from the raw rows of the same window: windows of whole days, with partial edge
minutes, with periods still waiting for a rebuild, with a report arriving after its
minute was built, a vital reported again, and bots left out or counted."""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from correlator.analytics.event_rollups import (
    ERROR,
    SESSION_LINKS,
    VITAL,
    event_rollups_refresh,
    page_path,
    top_frame,
    window_events,
)
from correlator.analytics.figures import step_bounds
from correlator.analytics.rollups import LENGTH
from correlator.analytics.sketches import bucket_of, bucket_value
from correlator.models import EventRollup
from correlator.reports.forms import TimeRange, step_for
from correlator.reports.pages import errors, vitals
from correlator.retention import retention_run
from rumserver.applications import ingest_app_by_public_key
from rumserver.ingest.services import beacon_ingest
from rumserver.models import BrowserEvent, BrowserSession, DirtyEventRollup
from tests import factories

UAS = {"desk": factories.CHROME_UA, "mob": factories.IPHONE_UA, "bot": factories.GOOGLEBOT_UA}
PATHS = ["/c/1", "/settings", "/c/2"]
MESSAGES = ["TypeError: boom", "Error: stream closed"]
STACKS = [
    "TypeError: boom\n    at render (https://chat.example.com/app.js?v=3:120:17)",
    "Error\n    at flush (https://chat.example.com/app.js:9:3)",
]


class Store:
    """An application and what was sent to it, at chosen receive times."""

    def __init__(self) -> None:
        created = factories.make_app("Rolled")
        self.app = created.application
        self.ingest = ingest_app_by_public_key(self.app.public_key)
        # Three days ago, at 05:00: the reports span two days and some hours.
        day = (timezone.now() - timedelta(days=3)).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        self.base = day + timedelta(hours=5)

    def send(self, at: datetime, events: list[dict[str, Any]], *, session: str,
             path: str = "/c/1") -> None:  # fmt: skip
        body = factories.batch(
            events,
            session={"id": session, "started_at": at.timestamp() * 1000 - 1000},
            page={"url": f"https://chat.example.com{path}?token=x", "referrer": ""},
            sent_at=at.timestamp() * 1000,
        )
        ua = UAS[session.split("-")[0]]
        result = beacon_ingest(
            app=self.ingest, body=factories.encode(body), user_agent=ua, client_ip=None, now=at
        )
        assert result.accepted == len(events) and not result.rejected


def vital(name: str, value: float, at: datetime, event_id: str | None = None) -> dict[str, Any]:
    return {"type": "vital", "id": event_id or f"v-{secrets.token_hex(8)}",
            "ts": at.timestamp() * 1000, "name": name, "value": value, "rating": None}  # fmt: skip


def js_error(k: int, at: datetime) -> dict[str, Any]:
    return {"type": "error", "id": f"e-{secrets.token_hex(8)}", "ts": at.timestamp() * 1000,
            "message": MESSAGES[k % 2], "stack": STACKS[(k // 2) % 2], "source": None,
            "lineno": None, "colno": None}  # fmt: skip


def fill(store: Store) -> None:
    """Reports over about two days: vitals of three paths from desktop, mobile and bot
    sessions, errors of four (message, frame) groups, several in the same minute."""
    for i in range(90):
        at = store.base + timedelta(minutes=37 * i, seconds=(13 * i) % 60)
        session = f"{['desk', 'mob', 'bot'][i % 3]}-{i % 7}"
        store.send(
            at,
            [vital(name, 50 + (i * 97 + j * 331) % 4000, at)
             for j, name in enumerate(["LCP", "TTFB", "INP"][: 1 + i % 3])]
            + [vital("CLS", ((i * 7) % 40) / 100, at)],
            session=session, path=PATHS[i % 3],
        )  # fmt: skip
        if i % 2:
            later = at + timedelta(seconds=20)
            store.send(later, [js_error(i, later), js_error(i + 1, later)], session=session)


# -- the exact answers, from the raw rows -------------------------------------------------


def raw(store: Store, kind: str, since: datetime, until: datetime, bots: bool) -> list[Any]:
    rows = BrowserEvent.objects.filter(
        app=store.app, type=kind, received_at__gte=since, received_at__lt=until
    ).values_list("name", "data", "session_id", "session__device_class", "received_at")
    return [row for row in rows if bots or row[3] != BrowserSession.Device.BOT]


def nearest_rank(values: list[float], q: float = 0.75) -> float:
    return sorted(values)[max(1, math.ceil(q * len(values))) - 1]


def sketched(name: str, value: float | None) -> str:
    """How a p75 shows: the histogram bucket of the exact value (within 1 %)."""
    if value is None:
        return vitals.fmt_vital(name, None)
    return vitals.fmt_vital(name, bucket_value(bucket_of(value)))


def exact_vitals(store: Store, window: TimeRange, bots: bool) -> dict[str, Any]:
    rows = raw(store, VITAL, window.since, window.until, bots)
    points = step_bounds(window.since, window.until, window.step)
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    totals: dict[str, list[float]] = defaultdict(list)
    lines: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for name, data, _, device, at in rows:
        path = page_path(data["page_url"])
        cells[(path, device, name)].append(data["value"])
        totals[name].append(data["value"])
        step = next(i for i, (lo, hi) in enumerate(points) if lo <= at < hi)
        lines[(name, device, step)].append(data["value"])
    table = {
        (path, device, name): (len(values), sketched(name, nearest_rank(values)))
        for (path, device, name), values in cells.items()
    }
    return {
        "totals": {n: (len(v), sketched(n, nearest_rank(v))) for n, v in totals.items()},
        "table": table,
        "lines": {key: sketched(key[0], nearest_rank(values)) for key, values in lines.items()},
    }


def page_vitals(store: Store, window: TimeRange, bots: bool) -> dict[str, Any]:
    report = vitals.vitals_report(app=store.app, window=window, bots=bots)
    table = {}
    for row in report.rows:
        for cell in row["cells"]:
            if cell["count"]:
                table[(row["path"], row["device"], cell["name"])] = (cell["count"], cell["value"])
    points = step_bounds(window.since, window.until, window.step)
    reports = window_events(app_id=store.app.pk, kind=VITAL, points=points, bots=bots)
    lines = {}
    for name, series in vitals.over_time(reports, len(points)).items():
        for line in series:
            for step, value in enumerate(line.values):
                if value is not None:
                    lines[(name, line.name, step)] = vitals.fmt_vital(name, value)
    return {
        "totals": {c["name"]: (c["count"], c["value"]) for c in report.totals if c["count"]},
        "table": table,
        "lines": lines,
    }


def exact_errors(store: Store, window: TimeRange, bots: bool) -> list[tuple[Any, ...]]:
    groups: dict[tuple[str, str], list[tuple[datetime, int]]] = defaultdict(list)
    for _, data, session, _, at in raw(store, ERROR, window.since, window.until, bots):
        frame = top_frame(data.get("stack"), data.get("source"), None, None)
        groups[(data.get("message") or "", frame)].append((at, session))
    out = []
    for (message, frame), seen in groups.items():
        latest: dict[int, datetime] = {}
        for at, session in seen:
            latest[session] = max(latest.get(session, at), at)
        linked = sorted(latest, key=lambda pk: (latest[pk], pk), reverse=True)[:SESSION_LINKS]
        names = dict(BrowserSession.objects.filter(pk__in=linked).values_list("pk", "session_id"))
        first, last = min(at for at, _ in seen), max(at for at, _ in seen)
        out.append((message, frame, len(seen), len(latest), first, last,
                     [(pk, names[pk]) for pk in linked]))  # fmt: skip
    return sorted(out, key=lambda g: (-g[2], -g[5].timestamp(), g[0], g[1]))


def page_errors(store: Store, window: TimeRange, bots: bool) -> list[tuple[Any, ...]]:
    return [
        (
            g.message,
            g.frame,
            g.count,
            g.session_count,
            g.first_seen,
            g.last_seen,
            g.session_links,
        )  # fmt: skip
        for g in errors.error_groups(app=store.app, window=window, bots=bots)
    ]


def windows(store: Store) -> dict[str, TimeRange]:
    base = store.base
    day = base.replace(hour=0)

    def custom(since: datetime, until: datetime) -> TimeRange:
        return TimeRange(since, until, "", step_for(until - since))

    return {
        "three whole days": custom(day, day + timedelta(days=3)),
        "partial edge minutes": custom(
            base + timedelta(minutes=7, seconds=30),
            base + timedelta(days=1, hours=3, minutes=17, seconds=10),
        ),
        "24 hours at a minute, steps of an hour": TimeRange(
            base + timedelta(hours=2, minutes=38),
            base + timedelta(hours=26, minutes=38),
            "24h",
            timedelta(hours=1),
        ),
        "one hour, steps of five minutes": TimeRange(
            base + timedelta(hours=7, minutes=3),
            base + timedelta(hours=8, minutes=3),
            "1h",
            timedelta(minutes=5),
        ),
    }


def assert_pages_exact(store: Store) -> None:
    for label, window in windows(store).items():
        for bots in (False, True):
            assert page_vitals(store, window, bots) == exact_vitals(store, window, bots), (
                label,
                bots,
            )
            assert page_errors(store, window, bots) == exact_errors(store, window, bots), (
                label,
                bots,
            )


def stored_rows() -> list[tuple[Any, ...]]:
    return sorted(
        EventRollup.objects.values_list(
            "app_id", "period", "start", "kind", "name", "place", "device", "count", "sketch"
        ),
        key=repr,
    )


def refresh() -> int:
    return event_rollups_refresh(now=timezone.now())


@pytest.fixture
def store(db: Any) -> Store:
    made = Store()
    fill(made)
    return made


def test_ingest_marks_the_minutes_of_vitals_and_errors(store: Store) -> None:
    marked = set(DirtyEventRollup.objects.values_list("period", "start"))
    received = BrowserEvent.objects.filter(app=store.app).values_list("received_at", flat=True)
    assert marked == {("minute", at.replace(second=0, microsecond=0)) for at in received}
    # A batch without vitals or errors marks nothing.
    DirtyEventRollup.objects.all().delete()
    store.send(store.base, [factories.action_event()], session="desk-1")
    assert not DirtyEventRollup.objects.exists()


def test_the_pages_from_rollups_equal_the_raw_answer(store: Store) -> None:
    assert_pages_exact(store)  # nothing built yet: every period from raw reports
    assert refresh() > 0
    assert not DirtyEventRollup.objects.exists()
    periods = set(EventRollup.objects.values_list("period", flat=True))
    assert periods == {"minute", "hour", "day"}
    assert_pages_exact(store)


def test_a_second_refresh_changes_nothing(store: Store) -> None:
    refresh()
    before = stored_rows()
    starts = EventRollup.objects.filter(period="minute").values_list("app_id", "start")
    now = timezone.now()
    DirtyEventRollup.objects.bulk_create(
        [
            DirtyEventRollup(
                app_id=app, period="minute", start=start, first_marked_at=now, last_marked_at=now
            )  # fmt: skip
            for app, start in set(starts)
        ]
    )
    assert refresh() > 0
    assert stored_rows() == before


def test_a_late_report_and_a_vital_reported_again(store: Store) -> None:
    refresh()
    # A report sent days after its page load, received in a minute already built.
    at = store.base + timedelta(hours=9, minutes=1, seconds=5)
    old = at - timedelta(days=2)
    store.send(at, [vital("LCP", 7777, old), js_error(0, old)], session="mob-9", path="/late")
    # A vital reported again: the same id, a new value, received later; its earlier
    # row leaves its minute (the same time, so updated in place; and another time).
    first = store.base + timedelta(hours=3, minutes=14, seconds=2)
    again = store.base + timedelta(hours=20, minutes=40, seconds=30)
    for event_id, ts in (("v-again-same", first), ("v-again-moved", again)):
        store.send(first, [vital("INP", 900, first, event_id)], session="desk-8", path="/again")
        refresh()
        store.send(again, [vital("INP", 40, ts, event_id)], session="desk-8", path="/again")
    assert BrowserEvent.objects.filter(event_id__startswith="v-again").count() == 2
    marked = set(DirtyEventRollup.objects.values_list("start", flat=True))
    assert first.replace(second=0) in marked and again.replace(second=0) in marked
    assert_pages_exact(store)  # the marked minutes (and their hours, days) from raw reports
    refresh()
    assert_pages_exact(store)
    day = TimeRange(store.base, store.base + timedelta(days=1), "", timedelta(hours=1))
    report = vitals.vitals_report(app=store.app, window=day, path="/again")
    row = next(r for r in report.rows if r["path"] == "/again")
    assert [c["count"] for c in row["cells"] if c["name"] == "INP"] == [2]
    assert row["cells"][1]["value"] == sketched("INP", 40)  # the new value, not 900


def test_bots_are_left_out_by_default(store: Store) -> None:
    refresh()
    window = windows(store)["three whole days"]
    devices = {row["device"] for row in vitals.vitals_report(app=store.app, window=window).rows}
    assert devices == {"desktop", "mobile"}
    counted = vitals.vitals_report(app=store.app, window=window, bots=True).rows
    assert "bot" in {row["device"] for row in counted}
    without = sum(g.count for g in errors.error_groups(app=store.app, window=window))
    every = sum(g.count for g in errors.error_groups(app=store.app, window=window, bots=True))
    assert 0 < without < every


def test_retention_drops_the_rollups_with_the_reports(store: Store) -> None:
    refresh()
    store.app.retention_days = 1
    store.app.save()
    retention_run(now=store.base + timedelta(days=2))
    cut = store.base + timedelta(days=1)
    left = EventRollup.objects.filter(app=store.app)
    assert left.exists()
    for period, start in left.values_list("period", "start"):
        assert start + LENGTH[period] > cut, (period, start)
    assert not DirtyEventRollup.objects.filter(app=store.app, start__lt=cut).exists()
