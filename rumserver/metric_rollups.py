"""Rollups of metric points (``MetricRollup``) at six levels, for long ranges on
PostgreSQL (DESIGN.md §10.6): a week of 15-second samples is 40,000 points a series,
28 six-hour rows.

Ingest marks the minute and the hour of every point it stores (``MetricDirty``, in
the statement that stores them). ``refresh`` takes an application's marks of one
width and makes those periods' rollups again from their points, all series of the
application at once; taking a mark and reading the points happen in one transaction,
and a point stored meanwhile marks its period again, so no point is left out for
long. Reads refresh the minutes first (a few, the last ones); beat refreshes the hours
(``rumserver.metric_rollups``, every minute), and a read takes the minutes of an hour
still marked.

The coarser levels are made from their children in the same transaction: five
minutes from the minutes, three and six hours and days from the hours (every chart
step of an hour or more is a whole number of hours, three hours, six hours or days,
cut at multiples of the step since the epoch). Each row also keeps the pair from the series' point before the
period to its first point in it (``prior_ns``, ``prior_increase``), taken from the
row before it at the same level: a counter's rate over any run of rows is then a sum,
with no window over the periods when read. A row's prior changes when the period
before it does, so a refresh also makes again the prior of the first row after each
run of periods it made, and that row's parents.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from rumserver.models import MetricDirty, MetricPoint, MetricRollup, MetricSeries
from rumserver.sql import commit_without_waiting_for_disk

MINUTE, FIVE_MINUTES, HOUR = 60, 300, 3600
THREE_HOURS, SIX_HOURS, DAY = 10800, 21600, 86400
# Largest first: a read covers a step with the largest whole periods that fit.
LEVELS = (DAY, SIX_HOURS, THREE_HOURS, HOUR, FIVE_MINUTES, MINUTE)
# The levels made from points (and marked by ingest), and what is made from each.
PARENTS = {MINUTE: (FIVE_MINUTES,), HOUR: (THREE_HOURS, SIX_HOURS, DAY)}
NS = 1_000_000_000

_TABLE = MetricRollup._meta.db_table
# The application's series, read by the statement itself (one round trip less).
_SERIES = f"ARRAY(SELECT id FROM {MetricSeries._meta.db_table} WHERE app_id = %(app)s)"
_COLUMNS = """series_id, app_id, seconds, start_ns, samples, total, increase, increase_seconds,
    first_ns, first_value, last_ns, last_value, prior_ns, prior_increase"""
_SUMS = ("samples", "total", "increase", "increase_seconds", "first_ns", "first_value",
         "last_ns", "last_value", "prior_ns", "prior_increase")  # fmt: skip


def _row(prefix: str) -> str:
    return "(" + ", ".join(f"{prefix}{name}" for name in _SUMS) + ")"


# A row made again as it was is not written: every version is a new entry of the
# covering index (its sums are in it), and a read that finds its minutes marked with
# no new point makes them again.
_UPSERT = f"""
ON CONFLICT (series_id, seconds, start_ns) DO UPDATE SET {_row("")} = {_row("excluded.")}
WHERE {_row("r.")} IS DISTINCT FROM {_row("excluded.")}
"""
# A counter's increase from one sample to the next: a lower value is a reset (the
# server restarted from zero), and the later value is the increase.
_INCREASE = "CASE WHEN {later} < {earlier} THEN {later} ELSE {later} - {earlier} END"

# Periods from their points. The window runs over each run of periods, so a period's
# first point finds its prior in the period before it within the run; a series' first
# period in a run (its first point has no lag) takes it from the row before it.
_REFRESH_SQL = f"""
INSERT INTO {_TABLE} AS r ({_COLUMNS})
SELECT made.series_id, %(app)s, %(seconds)s, made.start_ns, made.samples, made.total,
       made.increase, made.increase_seconds, made.first_ns, made.first_value, made.last_ns,
       made.last_value, CASE WHEN made.opens THEN before.last_ns ELSE made.prior_ns END,
       CASE WHEN NOT made.opens THEN made.prior_increase
            WHEN before.last_ns IS NULL THEN 0
            ELSE {_INCREASE.format(later="made.first_value", earlier="before.last_value")} END
FROM (
    SELECT series_id, start_ns, count(*) AS samples, sum(value) AS total,
           coalesce(sum(increase) FILTER (WHERE before_ns >= start_ns), 0) AS increase,
           coalesce(sum((time_ns - before_ns)::float8 / 1e9::float8)
                    FILTER (WHERE before_ns >= start_ns), 0) AS increase_seconds,
           min(time_ns) AS first_ns, (array_agg(value ORDER BY time_ns))[1] AS first_value,
           max(time_ns) AS last_ns, (array_agg(value ORDER BY time_ns DESC))[1] AS last_value,
           min(before_ns) FILTER (WHERE before_ns < start_ns) AS prior_ns,
           coalesce(sum(increase) FILTER (WHERE before_ns < start_ns), 0) AS prior_increase,
           bool_or(before_ns IS NULL) AS opens
    FROM (
        SELECT series_id, start_ns, time_ns, value, before_ns,
               {_INCREASE.format(later="value", earlier="before")} AS increase
        FROM (
            SELECT p.series_id, p.time_ns - p.time_ns %% %(width)s AS start_ns, p.time_ns,
                   p.value, lag(p.time_ns) OVER w AS before_ns, lag(p.value) OVER w AS before
            FROM unnest(%(los)s::bigint[], %(his)s::bigint[]) AS g(lo, hi)
            -- The points of each range (the key leads with the time), behind a fence so
            -- that no plan reads the points once a series; then the application's.
            CROSS JOIN LATERAL (
                SELECT p.series_id, p.time_ns, p.value FROM {MetricPoint._meta.db_table} p
                WHERE p.time_ns >= g.lo AND p.time_ns < g.hi AND p.value IS NOT NULL
                OFFSET 0
            ) AS p
            WHERE p.series_id = ANY({_SERIES})
            WINDOW w AS (PARTITION BY p.series_id, g.lo ORDER BY p.time_ns)
        ) AS lagged
    ) AS points
    GROUP BY series_id, start_ns
) AS made
LEFT JOIN LATERAL (  -- probed only for a series' first period in a run
    SELECT last_ns, last_value FROM {_TABLE}
    WHERE made.opens AND series_id = made.series_id AND seconds = %(seconds)s
      AND start_ns < made.start_ns
    ORDER BY start_ns DESC LIMIT 1
) AS before ON true
{_UPSERT}
"""

# Per series and run: the first row after the run takes its prior from the last row
# before it (the run's last, or an earlier one). Returns the starts of the rows changed.
_PRIOR_SQL = f"""
UPDATE {_TABLE} AS r
SET prior_ns = p.last_ns,
    prior_increase = CASE WHEN p.last_ns IS NULL THEN 0
                          ELSE {_INCREASE.format(later="r.first_value", earlier="p.last_value")}
                     END
FROM (
    SELECT s.id AS series_id, following.start_ns, before.last_ns, before.last_value
    FROM unnest({_SERIES}) AS s(id)
    CROSS JOIN unnest(%(bounds)s::bigint[]) AS b(at)
    CROSS JOIN LATERAL (
        SELECT start_ns FROM {_TABLE}
        WHERE series_id = s.id AND seconds = %(seconds)s AND start_ns >= b.at
        ORDER BY start_ns LIMIT 1
    ) AS following
    LEFT JOIN LATERAL (
        SELECT last_ns, last_value FROM {_TABLE}
        WHERE series_id = s.id AND seconds = %(seconds)s AND start_ns < b.at
        ORDER BY start_ns DESC LIMIT 1
    ) AS before ON true
) AS p
WHERE r.series_id = p.series_id AND r.seconds = %(seconds)s AND r.start_ns = p.start_ns
  AND (r.prior_ns IS DISTINCT FROM p.last_ns
       OR r.prior_increase IS DISTINCT FROM CASE WHEN p.last_ns IS NULL THEN 0
           ELSE {_INCREASE.format(later="r.first_value", earlier="p.last_value")} END)
RETURNING r.start_ns
"""

# A coarser level from its children's rows: the first child's prior is the period's;
# the later children's priors are pairs inside the period.
_DERIVE_SQL = f"""
INSERT INTO {_TABLE} AS r ({_COLUMNS})
SELECT series_id, %(app)s, %(seconds)s, parent, sum(samples), sum(total),
       sum(increase) + coalesce(sum(prior_increase) FILTER (WHERE NOT first), 0),
       sum(increase_seconds)
       + coalesce(sum((first_ns - prior_ns)::float8 / 1e9::float8) FILTER (WHERE NOT first), 0),
       min(first_ns), (array_agg(first_value ORDER BY start_ns))[1],
       max(last_ns), (array_agg(last_value ORDER BY start_ns DESC))[1],
       min(prior_ns) FILTER (WHERE first), coalesce(sum(prior_increase) FILTER (WHERE first), 0)
FROM (
    SELECT c.*, c.start_ns - c.start_ns %% %(width)s AS parent,
           row_number() OVER (PARTITION BY c.series_id, c.start_ns - c.start_ns %% %(width)s
                              ORDER BY c.start_ns) = 1 AS first
    FROM unnest(%(los)s::bigint[], %(his)s::bigint[]) AS g(lo, hi)
    CROSS JOIN LATERAL (  -- a range of the application's index a run
        SELECT * FROM {_TABLE} c
        WHERE c.app_id = %(app)s AND c.seconds = %(child)s AND c.start_ns >= g.lo
          AND c.start_ns < g.hi
        OFFSET 0
    ) AS c
) AS children
GROUP BY series_id, parent
{_UPSERT}
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
    """Make again the rollups of ``app_id``'s marked periods of ``seconds`` (MINUTE or
    HOUR) and of their parents; returns how many marked periods."""
    if not kept():
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        # Rollups are derived rows: a read need not wait for the disk to make them.
        commit_without_waiting_for_disk()
        # One refresh of an application's level at a time: a period's prior and its
        # parents read the rows next to it, which a concurrent refresh (beat and a read)
        # may be making; without the lock the later commit could write what it read
        # before the other's.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", [f"metric_rollups {app_id} {seconds}"]
        )
        cursor.execute(_TAKE_SQL, {"app": app_id, "seconds": seconds})
        starts = sorted(row[0] for row in cursor.fetchall())
        if starts:
            width = seconds * NS
            # Runs of consecutive periods as ranges: one index range a series and run
            # (a range a period would make the planner join every point to every period).
            runs = _runs(starts, width)
            cursor.execute(
                _REFRESH_SQL,
                {
                    "app": app_id,
                    "seconds": seconds,
                    "width": width,
                    "los": [lo for lo, _ in runs],
                    "his": [hi for _, hi in runs],
                },
            )
            bounds = [hi for _, hi in runs]
            cursor.execute(_PRIOR_SQL, {"app": app_id, "seconds": seconds, "bounds": bounds})
            # Rows whose prior changed, outside the runs: their parents change too.
            moved = [row[0] for row in cursor.fetchall()]
            children = _merged(runs + [(start, start + width) for start in moved])
            for parent in PARENTS[seconds]:
                derive(cursor, app_id, seconds, parent, children)
    return len(starts)


def derive(
    cursor: CursorWrapper, app_id: int, child: int, parent: int,
    children: list[tuple[int, int]],
) -> None:  # fmt: skip
    """Make again the ``parent``-second rows covering these ranges of ``child`` rows."""
    width = parent * NS
    covering = _merged([(lo - lo % width, -(-hi // width) * width) for lo, hi in children])
    cursor.execute(
        _DERIVE_SQL,
        {
            "app": app_id,
            "seconds": parent,
            "child": child,
            "width": width,
            "los": [lo for lo, _ in covering],
            "his": [hi for _, hi in covering],
        },
    )


def _runs(starts: list[int], width: int) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for start in starts:
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], start + width)
        else:
            runs.append((start, start + width))
    return runs


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in sorted(ranges):
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


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
