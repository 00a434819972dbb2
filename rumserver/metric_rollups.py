"""Minute and hour rollups of metric points (``MetricRollup``), for long ranges on
PostgreSQL (DESIGN.md §10.6): a week of 15-second samples is 40,000 points a series,
168 hour rows.

Ingest marks the minute and the hour of every point it stores (``MetricDirty``, in
the statement that stores them). ``refresh`` takes an application's marks of one
width and makes those periods' rollups again from their points, all series of the
application at once; taking a mark and reading the points happen in one transaction,
and a point stored meanwhile marks its period again, so no point is left out for
long. Reads refresh the minutes first (a few, the last ones); beat refreshes the hours
(``rumserver.metric_rollups``, every minute), and a read takes the minutes of an hour
still marked.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction

from rumserver.models import MetricDirty, MetricPoint, MetricRollup, MetricSeries

MINUTE, HOUR = 60, 3600
NS = 1_000_000_000

_REFRESH_SQL = f"""
INSERT INTO {MetricRollup._meta.db_table} AS r (series_id, seconds, start_ns, samples, total,
    increase, increase_seconds, first_ns, first_value, last_ns, last_value)
SELECT series_id, %(seconds)s, start_ns, count(*), sum(value),
       coalesce(sum(CASE WHEN value < before THEN value ELSE value - before END), 0),
       coalesce(sum((time_ns - before_ns)::float8 / 1e9::float8), 0),
       min(time_ns), (array_agg(value ORDER BY time_ns))[1],
       max(time_ns), (array_agg(value ORDER BY time_ns DESC))[1]
FROM (
    SELECT p.series_id, p.time_ns - p.time_ns %% %(width)s AS start_ns, p.time_ns, p.value,
           lag(p.time_ns) OVER w AS before_ns, lag(p.value) OVER w AS before
    FROM unnest(%(los)s::bigint[], %(his)s::bigint[]) AS g(lo, hi)
    -- The points of each range (the key leads with the time), behind a fence so
    -- that no plan reads the points once a series; then the application's.
    CROSS JOIN LATERAL (
        SELECT p.series_id, p.time_ns, p.value FROM {MetricPoint._meta.db_table} p
        WHERE p.time_ns >= g.lo AND p.time_ns < g.hi AND p.value IS NOT NULL
        OFFSET 0
    ) AS p
    WHERE p.series_id = ANY(%(series)s::bigint[])
    WINDOW w AS (PARTITION BY p.series_id, p.time_ns - p.time_ns %% %(width)s ORDER BY p.time_ns)
) AS points
GROUP BY series_id, start_ns
ON CONFLICT (series_id, seconds, start_ns) DO UPDATE SET
    samples = excluded.samples, total = excluded.total, increase = excluded.increase,
    increase_seconds = excluded.increase_seconds, first_ns = excluded.first_ns,
    first_value = excluded.first_value, last_ns = excluded.last_ns,
    last_value = excluded.last_value
"""

_TAKE_SQL = f"""
DELETE FROM {MetricDirty._meta.db_table}
WHERE app_id = %(app)s AND seconds = %(seconds)s
RETURNING start_ns
"""


def kept() -> bool:
    """Rollups are kept on PostgreSQL only; SQLite reads points."""
    return connection.vendor == "postgresql"


def refresh(app_id: int, seconds: int) -> int:
    """Make again the rollups of ``app_id``'s marked periods of ``seconds``; returns
    how many periods."""
    if not kept():
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_TAKE_SQL, {"app": app_id, "seconds": seconds})
        starts = sorted(row[0] for row in cursor.fetchall())
        if starts:
            # Runs of consecutive periods as ranges: one index range a series and run
            # (a range a period would make the planner join every point to every period).
            runs = _runs(starts, seconds * NS)
            cursor.execute(
                _REFRESH_SQL,
                {
                    "series": list(
                        MetricSeries.objects.filter(app_id=app_id).values_list("id", flat=True)
                    ),
                    "seconds": seconds,
                    "width": seconds * NS,
                    "los": [lo for lo, _ in runs],
                    "his": [hi for _, hi in runs],
                },
            )
    return len(starts)


def _runs(starts: list[int], width: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for start in starts:
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], start + width)
        else:
            runs.append((start, start + width))
    return runs


def marked(app_id: int, seconds: int) -> set[int]:
    """The starts of ``app_id``'s periods of ``seconds`` whose rollups are not made yet."""
    return set(
        MetricDirty.objects.filter(app_id=app_id, seconds=seconds).values_list(
            "start_ns", flat=True
        )
    )


def refresh_all() -> int:
    """Every application's marked minutes and hours (beat, every minute)."""
    apps = MetricDirty.objects.values_list("app_id", flat=True).distinct()
    return sum(refresh(app_id, seconds) for app_id in list(apps) for seconds in (MINUTE, HOUR))


def mark(app_id: int, times_ns: Iterable[int]) -> None:
    """Mark the minutes and hours of these point times (for points written without
    the metric store, as tests do)."""
    if not kept():
        return
    starts = {(seconds, t - t % (seconds * NS)) for t in times_ns for seconds in (MINUTE, HOUR)}
    MetricDirty.objects.bulk_create(
        [MetricDirty(app_id=app_id, seconds=s, start_ns=start) for s, start in starts],
        ignore_conflicts=True,
    )
