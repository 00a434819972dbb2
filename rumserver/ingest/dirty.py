"""Marking traces dirty for the correlator, in the ingest statements' own SQL.

Both ingest writes (beacons, spans) upsert here in the same statement or
transaction as their rows: a trace with new data is never missed by the sweep.
"""

from __future__ import annotations

from typing import Any

from rumserver.models import DirtyTrace
from rumserver.sql import placeholders

DIRTY_TABLE = DirtyTrace._meta.db_table
DIRTY_ON_CONFLICT = (
    "ON CONFLICT (app_id, trace_id) DO UPDATE SET last_marked_at = excluded.last_marked_at"
)
# A data-modifying CTE for the PostgreSQL statements; parameters %(app)s, %(now)s,
# %(traces)s. Sorted so that concurrent requests lock rows in one order.
POSTGRES_CTE = f"""
    INSERT INTO {DIRTY_TABLE} (app_id, trace_id, first_marked_at, last_marked_at)
    SELECT %(app)s::bigint, t, %(now)s::timestamptz, %(now)s::timestamptz
    FROM unnest(%(traces)s::text[]) AS t
    ORDER BY t
    {DIRTY_ON_CONFLICT}
"""
_CHUNK = 500


def mark_dirty_portable(cursor: Any, *, app_id: int, trace_ids: list[str], received: Any) -> None:
    """The same upsert as multi-row INSERTs (SQLite), on the caller's cursor and transaction."""
    for start in range(0, len(trace_ids), _CHUNK):
        chunk = trace_ids[start : start + _CHUNK]
        params: list[Any] = []
        for trace_id in chunk:
            params += [app_id, trace_id, received, received]
        cursor.execute(
            f"INSERT INTO {DIRTY_TABLE} (app_id, trace_id, first_marked_at, last_marked_at) "
            f"VALUES {placeholders(4, len(chunk))} {DIRTY_ON_CONFLICT}",
            params,
        )
