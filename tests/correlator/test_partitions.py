"""Day partitions of browser events, spans and turns on PostgreSQL (DESIGN.md §10.7,
rumserver.partitions): a retry still lands once, strays go to the default partition
and are still stitched and read, a turn re-stitched into another day is kept once,
partitions are made ahead idempotently, retention drops a day in one statement, and
the migrations convert a populated database in place.

SQLite keeps plain tables: these tests need PostgreSQL and skip elsewhere (saying so).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from correlator import selectors, tasks
from correlator.models import Rollup, Trace, Turn
from correlator.reports.pages.session import session_view
from correlator.retention import retention_run
from correlator.stitch.sweep import sweep_run, traces_stitch
from rumserver.ingest.dirty import mark_dirty
from rumserver.models import Application, BrowserEvent, BrowserSession, Span
from rumserver.partitions import TABLES, day_partitions, partitions_ensure
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

DAY_MS = 86_400_000
EVENTS = "rumserver_browserevent"
SPANS = "rumserver_span"
TURNS = "correlator_turn"


def _ms(day: date, hours: float = 0.0) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000 + hours * 3.6e6


def _partition_of(model: Any, **lookup: Any) -> list[str]:
    """The partition (table) each matching row is stored in."""
    table = model._meta.db_table
    where = " AND ".join(f"{column} = %s" for column in lookup)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tableoid::regclass::text FROM {table} WHERE {where} ORDER BY id",
            list(lookup.values()),
        )
        return [name for (name,) in cursor.fetchall()]


def _exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return bool(cursor.fetchone()[0])


def _post(client: Any, key: str, body: dict[str, Any]) -> None:
    send_beacon(client, key, body)


def test_an_event_retried_across_midnight_lands_once(client: Any) -> None:
    """Sent at 23:59:59.9 UTC and retried after midnight with the same time: one row,
    in the partition of its own day. A vital reported again after midnight (new time,
    same id) replaces its earlier value, in the new day's partition."""
    partitions_ensure()  # yesterday and today, even if migrate ran before midnight
    today = datetime.now(UTC).date()
    created = factories.make_app()
    key = created.application.public_key
    before_midnight = _ms(today) - 100
    turn = factories.turn_event(ts=before_midnight)
    vital = {
        "type": "vital", "id": "v1-123", "ts": before_midnight, "name": "CLS",
        "value": 0.05, "delta": 0.05, "rating": "good", "navigation_type": "navigate",
    }  # fmt: skip
    _post(client, key, factories.batch([turn, vital]))
    _post(client, key, factories.batch([turn, vital]))  # the retry, after midnight
    yesterday = f"{EVENTS}_p{today - timedelta(days=1):%Y%m%d}"
    assert _partition_of(BrowserEvent, event_id=turn["id"]) == [yesterday]
    assert _partition_of(BrowserEvent, event_id="v1-123") == [yesterday]
    later = {**vital, "ts": _ms(today) + 5_000, "value": 0.2, "delta": 0.15}
    _post(client, key, factories.batch([later]))
    assert _partition_of(BrowserEvent, event_id="v1-123") == [f"{EVENTS}_p{today:%Y%m%d}"]
    assert BrowserEvent.objects.get(event_id="v1-123").data["value"] == 0.2
    assert BrowserEvent.objects.count() == 2


def _partitions_locked(table: str) -> set[str]:
    """The partitions of ``table`` this connection holds a lock on."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT c.relname FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_inherits i ON i.inhrelid = c.oid "
            "WHERE l.pid = pg_backend_pid() AND i.inhparent = %s::regclass",
            [table],
        )
        return {name for (name,) in cursor.fetchall()}


@pytest.mark.django_db(transaction=True)
def test_a_beacon_of_turn_events_locks_its_days_partition_only(client: Any) -> None:
    """Beat and retention attach and drop day partitions under an exclusive lock. A
    beacon's statement locking every day's partition (the search for a vital reported
    again, which PostgreSQL cannot prune as it plans, named them all) made each beacon
    open a month of partitions, and wait behind a DROP of any of them. Without a
    vital in the batch the statement leaves that search out: a batch of turn events
    locks the partition its events land in, and nothing else of the events, from its
    first send to long after its prepared statement's plan became the generic one.
    A batch with a vital still replaces the vital's earlier row (the test above)."""
    today = datetime.now(UTC).date()
    partitions_ensure([today + timedelta(days=d) for d in range(-30, 3)])
    key = factories.make_app().application.public_key
    for _ in range(8):
        turn = factories.turn_event()
        day = datetime.fromtimestamp(turn["ts"] / 1000, UTC).date()
        with transaction.atomic():
            _post(client, key, factories.batch([turn, factories.turn_event()]))
            locked = _partitions_locked(EVENTS)
        assert locked == {f"{EVENTS}_p{day:%Y%m%d}"}, locked
    assert BrowserEvent.objects.count() == 16


@pytest.mark.django_db(transaction=True)
def test_a_stitch_batch_plans_the_days_around_its_traces_only(client: Any) -> None:
    """The stitch reads a batch's spans and events within each trace's window, a bound
    PostgreSQL learns row by row: by it alone the planner named (and locked) every day
    partition of both tables for every batch, and planning a month of them cost a
    stitched turn more than the reads did (bench/scale --rows 0). With the batch's
    span of windows beside it as constants, a batch of today's traces opens the days
    around today only (the window's day of browser-clock slack each side), custom plans
    all along. Once a connection (the sixth execution of a prepared statement) PostgreSQL
    also plans the generic plan, to compare its cost, and that one names every day; it
    keeps the custom plans, as the executions after show."""
    today = datetime.now(UTC).date()
    partitions_ensure([today + timedelta(days=d) for d in range(-30, 3)])
    created = factories.make_app()
    around = {f"_p{today + timedelta(days=d):%Y%m%d}" for d in range(-2, 3)}
    for n in range(8):
        golden = GoldenTurn(t0=time.time() * 1000 - 5_000, server_timing=True)
        send_beacon(client, created.application.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
        send_otlp(client, created.ingest_token, golden.model_request())
        key = (created.application.pk, golden.trace_id)
        now_ms = time.time() * 1000
        with transaction.atomic():
            traces_stitch(keys=[key], now=timezone.now(), windows={key: (now_ms - 10_000, now_ms)})
            locked = {t: _partitions_locked(t) for t in (EVENTS, SPANS)}
        if n == 5:  # the generic plan costed: every partition, once
            continue
        for table, names in locked.items():
            assert names and {x.removeprefix(table) for x in names} <= around, (n, table, names)
        assert Turn.objects.get(trace__trace_id=golden.trace_id).outcome == "completed"


def test_a_far_off_event_goes_to_the_default_partition_and_is_stitched(client: Any) -> None:
    """A browser clock five years ahead: its events land in the default partition (no
    day partition that far), its server spans in today's; the stitch still finds the
    turn event by its trace and makes the turn, its browser span at server time."""
    partitions_ensure()
    created = factories.make_app()
    five_years = 5 * 365 * DAY_MS
    golden = GoldenTurn(
        t0=time.time() * 1000 - 5_000, browser_offset_ms=five_years, server_timing=True
    )
    send_beacon(client, created.application.public_key, golden.beacon())
    send_otlp(client, created.ingest_token, golden.gateway_request())
    assert _partition_of(BrowserEvent, trace_id=golden.trace_id) == [f"{EVENTS}_default"]
    sweep_run(now=timezone.now(), finalize_all=True)
    trace = Trace.objects.get(trace_id=golden.trace_id)
    turn = Turn.objects.get(trace=trace)
    assert trace.linked and turn.outcome == "completed"
    # Corrected onto the server's clock: the browser span is today's, not in 5 years.
    assert abs(turn.t_send_ms - golden.t0) < 1_000
    today = datetime.now(UTC).date()
    browser_span = Span.objects.filter(trace_id=golden.trace_id, span_id=golden.browser_span)
    assert browser_span.count() == 1
    assert _partition_of(Span, trace_id=golden.trace_id, span_id=golden.browser_span)[0] in {
        f"{SPANS}_p{day:%Y%m%d}" for day in (today - timedelta(days=1), today)
    }


def test_a_new_day_partition_takes_its_rows_from_the_default_partition(client: Any) -> None:
    """An event 40 days ahead waits in the default partition; making that day's
    partition later moves it there (attaching would fail on it otherwise)."""
    created = factories.make_app()
    ahead = datetime.now(UTC).date() + timedelta(days=40)
    event = factories.turn_event(ts=_ms(ahead, 12))
    _post(client, created.application.public_key, factories.batch([event]))
    assert _partition_of(BrowserEvent, event_id=event["id"]) == [f"{EVENTS}_default"]
    made = partitions_ensure([ahead])
    assert f"{EVENTS}_p{ahead:%Y%m%d}" in made
    assert _partition_of(BrowserEvent, event_id=event["id"]) == [f"{EVENTS}_p{ahead:%Y%m%d}"]
    # Its retry lands once in its new partition.
    _post(client, created.application.public_key, factories.batch([event]))
    assert BrowserEvent.objects.filter(event_id=event["id"]).count() == 1


def test_beat_makes_the_partitions_ahead_twice_without_harm(settings: Any) -> None:
    """The beat task makes yesterday to LLMRUM_PARTITION_DAYS_AHEAD days on, for both
    tables; run again, it makes nothing and fails on nothing."""
    settings.LLMRUM_PARTITION_DAYS_AHEAD = 12
    today = datetime.now(UTC).date()
    wanted = {today + timedelta(days=d) for d in range(-1, 13)}
    with connection.cursor() as cursor:
        before = {spec.table: set(day_partitions(cursor, spec)) for spec in TABLES}
    tasks.partitions()
    with connection.cursor() as cursor:
        after = {spec.table: set(day_partitions(cursor, spec)) for spec in TABLES}
    for spec in TABLES:
        assert after[spec.table] >= wanted
        assert after[spec.table] - before[spec.table] == wanted - before[spec.table]
    assert partitions_ensure(sorted(wanted)) == []  # the second run: nothing to do
    tasks.partitions()
    with connection.cursor() as cursor:
        assert {spec.table: set(day_partitions(cursor, spec)) for spec in TABLES} == after


def test_retention_drops_a_day_in_one_statement_and_keeps_rollups(client: Any) -> None:
    """Ten-day retention: a day twelve days old goes as one DROP TABLE per table
    (events, spans, turns), without a row read; the kept day's rows stay; rollups, of
    either day, are kept."""
    created = factories.make_app()
    app = created.application
    Application.objects.filter(pk=app.pk).update(retention_days=10)
    today = datetime.now(UTC).date()
    old_day, kept_day = today - timedelta(days=12), today - timedelta(days=3)
    partitions_ensure([old_day, kept_day])
    for day in (old_day, kept_day):
        golden = GoldenTurn(t0=_ms(day, 12), session=f"s-{day}")
        send_beacon(client, app.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
    sweep_run(now=timezone.now(), finalize_all=True)  # the turns, and their rollups
    for day in (old_day, kept_day):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        for period, at in (("day", start), ("hour", start + timedelta(hours=12))):
            Rollup.objects.update_or_create(
                app=app, period=period, start=at, dimension="", key="",
                defaults={"turns": 7, "computed_at": timezone.now()},
            )  # fmt: skip
    # Hours and days stay (minutes go with the raw rows: correlator.retention).
    kept_rollups = Rollup.objects.exclude(period="minute").order_by("id")
    rollups = list(kept_rollups.values())
    assert {r["start"].date() for r in rollups} == {old_day, kept_day}
    old_tables = [f"{t}_p{old_day:%Y%m%d}" for t in (EVENTS, SPANS, TURNS)]
    assert all(_exists(t) for t in old_tables)
    kept_ns = int(_ms(kept_day) * 1e6)
    kept = (
        BrowserEvent.objects.filter(ts_ms__gte=_ms(kept_day)).count(),
        Span.objects.filter(start_ns__gte=kept_ns).count(),
        Turn.objects.filter(t_send_ms__gte=_ms(kept_day)).count(),
    )
    assert Turn.objects.filter(t_send_ms__lt=_ms(kept_day)).count() == 1 == kept[2]
    assert Span.objects.filter(start_ns__lt=kept_ns).exists()
    with connection.cursor() as cursor:
        # The foreign-key checks of the rows inserted above, deferred to the test's
        # commit, would keep their tables from being dropped in this transaction
        # (beat's retention runs in a transaction of its own).
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    with CaptureQueriesContext(connection) as queries:
        result = retention_run(now=timezone.now())
    assert set(old_tables) <= set(result.dropped)
    assert not any(_exists(t) for t in old_tables)
    for table in old_tables:
        touching = [q["sql"] for q in queries.captured_queries if table in q["sql"]]
        assert touching == [f'DROP TABLE "{table}"']
    assert all(_exists(f"{t}_p{kept_day:%Y%m%d}") for t in (EVENTS, SPANS, TURNS))
    assert BrowserEvent.objects.filter(ts_ms__lt=_ms(kept_day)).count() == 0
    assert BrowserEvent.objects.filter(ts_ms__gte=_ms(kept_day)).count() == kept[0] > 0
    assert Span.objects.filter(start_ns__lt=kept_ns).count() == 0
    assert Span.objects.filter(start_ns__gte=kept_ns).count() == kept[1] > 0
    assert Turn.objects.filter(t_send_ms__lt=_ms(kept_day)).count() == 0
    assert Turn.objects.filter(t_send_ms__gte=_ms(kept_day)).count() == kept[2]
    assert list(kept_rollups.values()) == rollups


def _partitioned(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
        return cursor.fetchone()[0] == "p"


@pytest.mark.django_db(transaction=True)
def test_the_migration_converts_a_populated_database(client: Any) -> None:
    """Back to the plain tables, rows stored there, forward again: every row is kept
    (ids too), each in its day's partition or the default one, and keys still drop
    a retry."""
    executor = MigrationExecutor(connection)
    before = [("correlator", "0012_rollups_count_old_turns_unpriced")]
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate(before)
    try:
        assert not any(_partitioned(t) for t in (EVENTS, SPANS, TURNS))
        # Stored by the ORM: ingest's statements name the partitioned tables' keys.
        created = factories.make_app()
        app = created.application
        today = datetime.now(UTC).date()
        days = [today - timedelta(days=d) for d in (0, 2, 30)]
        events = [factories.turn_event(ts=_ms(day, 6)) for day in days]
        events.append(factories.turn_event(ts=_ms(date(2001, 1, 1))))  # a stray
        now = timezone.now()
        session = BrowserSession.objects.create(
            app=app, session_id="sess-alice", first_seen_at=now, last_seen_at=now
        )
        for event in events:
            BrowserEvent.objects.create(
                app=app, session=session, event_id=event["id"], type="turn",
                ts_ms=event["ts"], sent_at_ms=event["ts"], received_at=now, data=event,
                trace_id=event["trace_id"], span_id=event["span_id"],
            )  # fmt: skip
        for n in range(3):
            Span.objects.create(
                app=app, trace_id=events[1]["trace_id"], span_id=f"{n:016x}", name="s",
                start_ns=int(_ms(days[1], 9) * 1e6), end_ns=int(_ms(days[1], 10) * 1e6),
                received_at=now,
            )  # fmt: skip
        # A turn a day and a stray's, each with its trace starting at its send.
        for n, event in enumerate(events):
            trace = Trace.objects.create(
                app=app, trace_id=event["trace_id"], start_ms=event["ts"],
                end_ms=event["ts"] + 1_000, last_received_at=now, stitched_at=now,
            )  # fmt: skip
            Turn.objects.create(
                app=app, trace=trace, session=session, span_id=event["span_id"],
                t_send_ms=event["ts"], outcome="completed", turn_index=n,
            )  # fmt: skip
        rows = {
            EVENTS: sorted(BrowserEvent.objects.values_list("id", "event_id", "ts_ms")),
            SPANS: sorted(Span.objects.values_list("id", "span_id", "start_ns")),
            TURNS: sorted(Turn.objects.values_list("id", "trace_id", "t_send_ms")),
        }
        assert len(rows[EVENTS]) == 4 and len(rows[SPANS]) == 3 and len(rows[TURNS]) == 4
    finally:
        executor = MigrationExecutor(connection)
        executor.migrate(latest)
    assert all(_partitioned(t) for t in (EVENTS, SPANS, TURNS))
    assert sorted(BrowserEvent.objects.values_list("id", "event_id", "ts_ms")) == rows[EVENTS]
    assert sorted(Span.objects.values_list("id", "span_id", "start_ns")) == rows[SPANS]
    assert sorted(Turn.objects.values_list("id", "trace_id", "t_send_ms")) == rows[TURNS]
    turn_partitions = [_turn_rows(event["trace_id"]) for event in events]
    assert [rows[0][0] for rows in turn_partitions] == [
        *(f"{TURNS}_p{day:%Y%m%d}" for day in days),
        f"{TURNS}_default",
    ]
    # Each trace finds its turn by the turn's whole key, stray included.
    traces = selectors.with_turns(list(Trace.objects.filter(app=app).order_by("id")))
    assert [t.turn.span_id for t in traces] == [e["span_id"] for e in events]
    for event, day in zip(events, days, strict=False):
        assert _partition_of(BrowserEvent, event_id=event["id"]) == [f"{EVENTS}_p{day:%Y%m%d}"]
    assert _partition_of(BrowserEvent, event_id=events[-1]["id"]) == [f"{EVENTS}_default"]
    # The keys hold: a retry lands once, a new row gets a fresh id.
    _post(client, created.application.public_key, factories.batch(events))
    assert BrowserEvent.objects.count() == 4
    fresh = factories.turn_event()
    _post(client, created.application.public_key, factories.batch([fresh]))
    assert BrowserEvent.objects.get(event_id=fresh["id"]).id > max(r[0] for r in rows[EVENTS])


def test_reads_by_time_read_only_their_days() -> None:
    """A read bounded by time (spans of an hour, events of a day) is pruned to the
    partitions of those days."""
    partitions_ensure()
    today = datetime.now(UTC).date()
    app = factories.make_app().application
    cases = [
        (Span.objects.filter(app=app, start_ns__gte=int(_ms(today) * 1e6),
                             start_ns__lt=int(_ms(today, 1) * 1e6)), SPANS),
        (BrowserEvent.objects.filter(app=app, ts_ms__gte=_ms(today), ts_ms__lt=_ms(today, 24)),
         EVENTS),
    ]  # fmt: skip
    for queryset, table in cases:
        plan = queryset.explain()
        scanned = set(re.findall(rf" on ({table}_\w+)", plan))
        assert scanned == {f"{table}_p{today:%Y%m%d}"}, plan


def test_a_browser_span_moved_by_a_new_clock_skew_is_kept_once(client: Any) -> None:
    """Stitched first from the beacon alone, then again once the gateway's span
    arrives and tightens the clock skew: the browser span moves (another start, maybe
    another day's partition) and its row at the old start goes."""
    created = factories.make_app()
    golden = GoldenTurn(t0=time.time() * 1000 - 5_000, browser_offset_ms=-2 * DAY_MS)
    send_beacon(client, created.application.public_key, golden.beacon())
    sweep_run(now=timezone.now())
    spans = Span.objects.filter(trace_id=golden.trace_id, span_id=golden.browser_span)
    first = list(spans.values_list("start_ns", flat=True))
    send_otlp(client, created.ingest_token, golden.gateway_request())
    sweep_run(now=timezone.now())
    turn = Turn.objects.get(trace__trace_id=golden.trace_id)
    assert len(first) == 1 and spans.count() == 1
    assert spans.get().start_ns == round(turn.t_send_ms * 1e6) != first[0]


# --- turns (day partitions by t_send_ms) ----------------------------------------------------


def _turn_rows(trace_id: str) -> list[tuple[str, int, float]]:
    """(partition, id, send time) of every turn row of the trace, whatever its time."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT u.tableoid::regclass::text, u.id, u.t_send_ms FROM {TURNS} u "
            "JOIN correlator_trace t ON t.id = u.trace_id WHERE t.trace_id = %s ORDER BY u.id",
            [trace_id],
        )
        return list(cursor.fetchall())


def _day_table(ms: float) -> str:
    return f"{TURNS}_p{datetime.fromtimestamp(ms / 1000, UTC):%Y%m%d}"


def test_a_turn_restitched_across_midnight_is_kept_once(client: Any) -> None:
    """Stitched first from the beacon alone (a browser clock two days behind, which a
    beacon only bounds), then again once the gateway's span pins the skew: the turn's
    send time moves days, to another day's partition; its old row goes in the same
    statement, so the trace has one turn, at its start. Stitched once more with the
    same data (a retry), it is the same row."""
    partitions_ensure([datetime.now(UTC).date() - timedelta(days=d) for d in range(-1, 4)])
    created = factories.make_app()
    golden = GoldenTurn(t0=time.time() * 1000 - 5_000, browser_offset_ms=-2 * DAY_MS)
    send_beacon(client, created.application.public_key, golden.beacon())
    sweep_run(now=timezone.now())
    first = _turn_rows(golden.trace_id)
    assert len(first) == 1 and first[0][0] == _day_table(first[0][2])
    send_otlp(client, created.ingest_token, golden.gateway_request())
    sweep_run(now=timezone.now())
    second = _turn_rows(golden.trace_id)
    assert len(second) == 1, second
    (partition, turn_id, t_send), (old_partition, _, _) = second[0], first[0]
    assert partition == _day_table(t_send) != old_partition and abs(t_send - golden.t0) < 1_000
    trace = Trace.objects.get(trace_id=golden.trace_id)
    assert trace.start_ms == t_send and trace.turn.pk == turn_id
    # The retry: marked dirty again, stitched again, the same single row.
    with connection.cursor() as cursor:
        mark_dirty(cursor, app_id=created.application.pk, trace_ids=[golden.trace_id],
                   now=timezone.now())  # fmt: skip
    sweep_run(now=timezone.now())
    assert _turn_rows(golden.trace_id) == second


def test_a_far_off_turn_is_in_the_default_partition_and_found_by_every_reader(
    client: Any,
) -> None:
    """A turn sent in 2001 (its spans too, server clock and all: an import, a clock
    reset) and one 40 days ahead land in the default partition of turns; the trace
    list and its filters, the trace's API answer and page, the session's page, the
    sessions index and the exact metrics all find them. Making the later one's day
    partition moves it there, where they still find it."""
    partitions_ensure()
    created = factories.make_app()
    app = created.application
    ahead = datetime.now(UTC).date() + timedelta(days=40)
    goldens = [
        GoldenTurn(t0=_ms(date(2001, 1, 1), 12), session="s-far"),
        GoldenTurn(t0=_ms(ahead, 12), session="s-far"),
    ]
    for golden in goldens:
        send_beacon(client, app.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
    sweep_run(now=timezone.now(), finalize_all=True)
    assert [_turn_rows(g.trace_id)[0][0] for g in goldens] == [f"{TURNS}_default"] * 2
    session = BrowserSession.objects.get(app=app, session_id="s-far")
    client.force_login(User.objects.create_user("far", password="pw", is_staff=True))
    for step in ("default", "moved"):
        for golden in goldens:
            listed = client.get("/api/v1/traces", {"app": app.slug, "outcome": "completed",
                                                   "q": golden.trace_id}).json()  # fmt: skip
            assert [(t["trace_id"], t["turn"]["outcome"]) for t in listed["results"]] == [
                (golden.trace_id, "completed")
            ], step
            detail = client.get(f"/api/v1/traces/{golden.trace_id}").json()
            assert detail["turn"]["session_id"] == "s-far", step
            page = client.get(f"/reports/traces/{golden.trace_id}", {"app": app.slug})
            assert page.status_code == 200 and page.context["turn"] is not None, step
        everything = client.get("/api/v1/traces", {"app": app.slug}).json()["results"]
        assert {t["trace_id"]: t["turn"]["outcome"] for t in everything} == {
            g.trace_id: "completed" for g in goldens
        }, step
        view = session_view(session)
        assert sum(item["kind"] == "turn" for _, items in view["conversations"]
                   for item in items) == 2, step  # fmt: skip
        assert selectors.session_counts(session_pks=[session.pk])[session.pk].turns == 2, step
        since = datetime(2001, 1, 1, 11, tzinfo=UTC)
        metrics = client.get(
            "/api/v1/metrics",
            {
                "app": app.slug,
                "since": since.isoformat(),
                "until": (since + timedelta(hours=2)).isoformat(),
            },
        )
        assert metrics.json()["turns"] == 1, step  # fmt: skip
        if step == "default":
            assert f"{TURNS}_p{ahead:%Y%m%d}" in partitions_ensure([ahead])
            assert _turn_rows(goldens[1].trace_id)[0][0] == f"{TURNS}_p{ahead:%Y%m%d}"
