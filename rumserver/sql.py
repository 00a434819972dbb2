"""Running the hand-written ingest statements.

On PostgreSQL, a plain psycopg cursor on Django's connection (so the caller's
transaction, if any, still applies) binds parameters server-side and prepares
the statement once per connection; Django's own cursors bind client-side, which
the ORM relies on elsewhere. ``wrap_database_errors`` turns psycopg's exceptions
into Django's, as Django's cursors do.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import connection
from django.db.backends.signals import connection_created


def execute_prepared(sql: str, params: dict[str, Any]) -> None:
    import psycopg

    connection.ensure_connection()
    # Django turns psycopg's automatic preparing off; ask for it (settings.py sets the
    # threshold so that asking works). LLMRUM_PG_PREPARE=0 for transaction-mode poolers.
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=settings.LLMRUM_PG_PREPARE)


def fetch_prepared(sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    """``execute_prepared`` for a read: its rows as psycopg's plain tuples (cast the
    columns to the types wanted: no Django converters run here)."""
    import psycopg

    connection.ensure_connection()
    with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(sql, params, prepare=settings.LLMRUM_PG_PREPARE)
        return cursor.fetchall()


def commit_without_waiting_for_disk() -> None:
    """For a transaction that only writes what can be derived again from committed
    rows (stitched traces, rollups): don't wait for its WAL flush. A crash may lose
    its last commits, whole (their dirty marks come back with them), never half of
    one; call inside the transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO off")


def placeholders(columns: int, rows: int) -> str:
    """``(%s, %s), (%s, %s)`` for a multi-row VALUES list (the portable path)."""
    row = "(" + ", ".join(["%s"] * columns) + ")"
    return ", ".join([row] * rows)


# SQLite allows 32766 parameters a statement; stay well below it.
PORTABLE_CHUNK = 500


def insert_portable(cursor: Any, *, head: str, tail: str, rows: list[list[Any]]) -> None:
    """``{head} VALUES (…), (…) {tail}`` for ``rows`` (the parameters of each), in
    multi-row statements of ``PORTABLE_CHUNK`` rows (the portable path)."""
    for start in range(0, len(rows), PORTABLE_CHUNK):
        chunk = rows[start : start + PORTABLE_CHUNK]
        params = [value for row in chunk for value in row]
        cursor.execute(f"{head} VALUES {placeholders(len(chunk[0]), len(chunk))} {tail}", params)


def no_jit(sender: Any, connection: Any, **kwargs: Any) -> None:
    """Every PostgreSQL connection of llmrum plans without JIT (``connection_created``,
    connected in ``RumserverConfig.ready``). llmrum's statements are index probes of
    a few hundred keys; on tables without statistics (a fresh deployment, a restore)
    the planner's cost estimates cross ``jit_above_cost`` and PostgreSQL compiled each
    read of a stitch batch for 0.4 s (bench/stitch --no-analyze). A ``SET`` rather
    than a startup option: poolers such as PgBouncer refuse unknown startup options."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET jit = off")


connection_created.connect(no_jit, dispatch_uid="llmrum-no-jit")
