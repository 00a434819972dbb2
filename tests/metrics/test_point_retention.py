"""Model-server metric points do not grow for ever: on PostgreSQL they are day
partitions by their time (rumserver.partitions), a point lands in its day and a retry
still lands once, and retention drops a day past every application's retention in one
statement; what a shorter retention keeps within the kept days, and everything on
SQLite, goes row by row. The hours and longer rollups stay, so the model-server page
still answers for the days whose points are gone."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from correlator.retention import retention_run
from rumserver.metric_rollups import refresh_all
from rumserver.models import Application, MetricPoint, MetricRollup
from rumserver.partitions import partitions_ensure
from tests import factories
from tests.metrics.test_receiver import post
from tests.metrics.test_store import _scrape

POINTS = "rumserver_metricpoint"
DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9


def _ns(day: date, hours: float = 0.0) -> int:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
    return int(start) * 10**9 + int(hours * HOUR_NS)


def _partitions_of_points() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {POINTS} ORDER BY time_ns, series_id")
        return [name for (name,) in cursor.fetchall()]


def _exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return bool(cursor.fetchone()[0])


def _primary_key() -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = to_regclass(%s) AND contype = 'p'",
            [POINTS],
        )
        return cursor.fetchone()[0]


def _partitioned() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [POINTS])
        return cursor.fetchone()[0] == "p"


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_point_lands_in_its_day_and_a_retry_lands_once() -> None:
    created = factories.make_app()
    today = datetime.now(UTC).date()
    stray = _ns(date(2001, 1, 1))
    partitions_ensure([today])
    client, token = Client(), created.ingest_token
    for body in (_scrape(_ns(today, 3), "0", "1"), _scrape(stray, "0")):
        for _ in range(2):  # the export, then its retry
            assert post(client, body, token=token).status_code == 200
    assert _partitioned()
    assert _primary_key() == "PRIMARY KEY (time_ns, series_id)"  # time first, as ingest sorts
    assert _partitions_of_points() == [f"{POINTS}_default", *[f"{POINTS}_p{today:%Y%m%d}"] * 2]


def _points_on(client: Client, token: str, days: list[date]) -> None:
    for day in days:
        body = _scrape(_ns(day, 12), "0", "1")
        assert post(client, body, token=token).status_code == 200


@pytest.mark.postgres
@pytest.mark.django_db
def test_retention_drops_a_day_of_points_in_one_statement_and_keeps_its_hours() -> None:
    created = factories.make_app()
    app = created.application
    Application.objects.filter(pk=app.pk).update(retention_days=10)
    today = datetime.now(UTC).date()
    old_day, kept_day = today - timedelta(days=12), today - timedelta(days=3)
    partitions_ensure([old_day, kept_day])
    _points_on(Client(), created.ingest_token, [old_day, kept_day])
    refresh_all()
    hours = list(
        MetricRollup.objects.filter(app=app, seconds=3600).values_list("start_ns", "series_id")
    )
    assert {start // DAY_NS for start, _ in hours} == {
        _ns(old_day) // DAY_NS,
        _ns(kept_day) // DAY_NS,
    }
    old_table = f"{POINTS}_p{old_day:%Y%m%d}"
    assert _exists(old_table)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # as beat's own transaction
    with CaptureQueriesContext(connection) as queries:
        result = retention_run(now=timezone.now())
    assert old_table in result.dropped and not _exists(old_table)
    assert [q["sql"] for q in queries.captured_queries if old_table in q["sql"]] == [
        f'DROP TABLE "{old_table}"'
    ]
    assert sorted(MetricPoint.objects.values_list("time_ns", flat=True)) == [_ns(kept_day, 12)] * 2
    assert sorted(
        MetricRollup.objects.filter(app=app, seconds=3600).values_list("start_ns", "series_id")
    ) == sorted(hours)


@pytest.mark.django_db
def test_retention_deletes_points_past_each_applications_own_retention() -> None:
    """Row by row: on SQLite, and on PostgreSQL for an application whose retention is
    shorter than another's (its day partitions are kept for the other)."""
    short, long = factories.make_app(), factories.make_app()
    Application.objects.filter(pk=short.application.pk).update(retention_days=5)
    Application.objects.filter(pk=long.application.pk).update(retention_days=30)
    today = datetime.now(UTC).date()
    days = [today - timedelta(days=d) for d in (8, 2)]
    partitions_ensure(days)
    for created in (short, long):
        _points_on(Client(), created.ingest_token, days)
    result = retention_run(now=timezone.now())
    assert result.deleted["metric points"] == 2
    kept = MetricPoint.objects.values_list("series__app_id", "time_ns")
    assert sorted(kept) == sorted(
        [(short.application.pk, _ns(days[1], 12))] * 2
        + [(long.application.pk, _ns(day, 12)) for day in days for _ in range(2)]
    )
    assert retention_run(now=timezone.now()).deleted["metric points"] == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_migration_partitions_a_populated_points_table() -> None:
    """Back to a plain table, points stored there, forward again: every point kept in
    its day's partition (a stray in the default one), the key as it was."""
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([("rumserver", "0014_metric_rollup_levels")])
    try:
        assert not _partitioned()
        created = factories.make_app()
        today = datetime.now(UTC).date()
        times = [_ns(today, 1), _ns(today - timedelta(days=2), 5), _ns(date(2001, 1, 1))]
        for time_ns in times:
            assert (
                post(Client(), _scrape(time_ns, "0"), token=created.ingest_token).status_code == 200
            )
        rows = sorted(MetricPoint.objects.values_list("time_ns", "series_id", "value"))
        assert len(rows) == 3
    finally:
        MigrationExecutor(connection).migrate(latest)
    assert _partitioned()
    assert _primary_key() == "PRIMARY KEY (time_ns, series_id)"
    assert sorted(MetricPoint.objects.values_list("time_ns", "series_id", "value")) == rows
    assert _partitions_of_points() == [
        f"{POINTS}_default",
        f"{POINTS}_p{today - timedelta(days=2):%Y%m%d}",
        f"{POINTS}_p{today:%Y%m%d}",
    ]
    # The key still drops a retry.
    body = _scrape(times[0], "0")
    assert post(Client(), body, token=created.ingest_token).status_code == 200
    assert MetricPoint.objects.count() == 3
