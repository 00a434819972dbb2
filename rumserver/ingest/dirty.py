"""Marking traces dirty for the correlator: one upsert, in every form its writers need.

Whatever gives a trace new data (a beacon, spans, a score) or asks for it to be
stitched again upserts it here in the same statement or transaction as that data,
so the sweep never misses a trace. Rows go in sorted by (application, trace), so
that concurrent writers lock them in one order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.db import connection

from rumserver.models import DirtyEventRollup, DirtyTrace
from rumserver.sql import placeholders

_TABLE = DirtyTrace._meta.db_table
_COLUMNS = "app_id, trace_id, first_marked_at, last_marked_at"
_ON_CONFLICT = (
    "ON CONFLICT (app_id, trace_id) DO UPDATE SET last_marked_at = excluded.last_marked_at"
)
# SQLite allows 32766 parameters a statement; stay well below it.
_PORTABLE_CHUNK = 500


def upsert_sql(rows: str) -> str:
    """The upsert of what the SELECT ``rows`` yields, (app_id, trace_id, marked at,
    marked at) sorted by the first two: a statement, or a data-modifying CTE."""
    return f"INSERT INTO {_TABLE} ({_COLUMNS}) {rows} {_ON_CONFLICT}"


# One application's traces on PostgreSQL, parameters %(app)s, %(now)s and %(traces)s:
# a statement (``mark_dirty``), or a CTE inside an ingest write's single statement.
MARK_SQL = upsert_sql(
    "SELECT %(app)s::bigint, t, %(now)s::timestamptz, %(now)s::timestamptz "
    "FROM unnest(%(traces)s::text[]) AS t ORDER BY t"
)


def mark_dirty(cursor: Any, *, app_id: int, trace_ids: list[str], now: datetime) -> None:
    """Mark one application's traces dirty, on the caller's cursor and transaction."""
    ordered = sorted(set(trace_ids))
    if not ordered:
        return
    if connection.vendor == "postgresql":
        cursor.execute(MARK_SQL, {"app": app_id, "now": now, "traces": ordered})
        return
    marked = connection.ops.adapt_datetimefield_value(now)
    for start in range(0, len(ordered), _PORTABLE_CHUNK):
        chunk = ordered[start : start + _PORTABLE_CHUNK]
        params: list[Any] = []
        for trace_id in chunk:
            params += [app_id, trace_id, marked, marked]
        cursor.execute(upsert_sql(f"VALUES {placeholders(4, len(chunk))}"), params)


# The vitals and errors pages' rollup minutes (``correlator.analytics.event_rollups``):
# the same upsert, so a mark made while a rebuild holds the row waits for it and is
# made again after the rebuild deletes it.
EVENT_MINUTES_TABLE = DirtyEventRollup._meta.db_table
EVENT_MINUTES_COLUMNS = "app_id, period, start, first_marked_at, last_marked_at"
EVENT_MINUTES_ON_CONFLICT = (
    "ON CONFLICT (app_id, period, start) DO UPDATE SET last_marked_at = excluded.last_marked_at"
)


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def mark_event_minutes(
    cursor: Any, *, app_id: int, received: Iterable[datetime], now: datetime
) -> None:
    """Mark dirty the minutes of these receive times, on the caller's cursor and
    transaction (PostgreSQL's ingest does it inside its one statement)."""
    minutes = sorted({minute_of(moment) for moment in received})
    if not minutes:
        return
    adapt = connection.ops.adapt_datetimefield_value
    params: list[Any] = []
    for minute in minutes:
        params += [app_id, "minute", adapt(minute), adapt(now), adapt(now)]
    cursor.execute(
        f"INSERT INTO {EVENT_MINUTES_TABLE} ({EVENT_MINUTES_COLUMNS}) "
        f"VALUES {placeholders(5, len(minutes))} {EVENT_MINUTES_ON_CONFLICT}",
        params,
    )
