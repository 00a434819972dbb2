"""Day partitions of the raw tables on PostgreSQL (DESIGN.md §10.7).

Browser events by their own time (``ts_ms``, the browser's clock), spans by their
start (``start_ns``), stitched turns by their send time (``t_send_ms``, epoch ms on
the server's clock) and model-server metric points by their time (``time_ns``) are
declarative RANGE partitions of one UTC day each, named
``<table>_pYYYYMMDD``, plus a DEFAULT partition (``<table>_default``) for strays: a
browser clock years off, a span from next month. SQLite keeps plain tables; every
function here does nothing there.

Turns: their unique key becomes ``(trace_id, t_send_ms)``, so "one turn a trace" is
no database constraint any more. It holds because a trace's turn is written under
the trace's row lock and a turn whose send time moves replaces its old row in the
same transaction (``correlator.stitch.store``); and readers go from a trace to its turn
by that whole key, ``t_send_ms = trace.start_ms`` (a trace with a turn starts at its
send: ``correlator.models.TraceOfTurn``), so the planner knows it is one row without
statistics, and reads one partition (tests/correlator/test_query_plans.py).

Keys. PostgreSQL wants the partition key in every unique index of a partitioned
table, so on PostgreSQL the primary key is ``(id, <key>)`` and each unique
constraint gets the key as its last column, under its Django name. Django still
sees ``id`` as the primary key (the model state is unchanged, so SQLite and
``makemigrations`` are untouched): ids come from one identity sequence, so ``id``
alone stays unique in practice, and a composite primary key in Django (5.2's
CompositePrimaryKey) would change every ``.pk`` and admin URL and has no migration
from a plain key. Metric points are the exception: their Django key is already
``(time_ns, series_id)``, time first as ingest sorts them, and is kept as it is
(``key_in_primary_key``). A retried event or span carries the same time as its first copy,
so it lands in the same partition and the widened key still drops it; what changes
a row's time on purpose (a web-vitals value reported again, a browser span stitched
again with another clock skew) deletes the row of the old time in the same
statement (``rumserver.ingest.beacon.store``, ``correlator.stitch.store``; a turn
re-stitched at another send time likewise). Nothing has a foreign key to these
tables (the turn's own keys to its trace and session are not database constraints).

Partitions are made ahead (yesterday to ``LLMRUM_PARTITION_DAYS_AHEAD`` days on) at
migrate and by beat, as standalone tables then attached: ATTACH takes a weaker lock
on the parent than ``CREATE TABLE … PARTITION OF`` (ingest and reads go on), and
rows of that day already in the default partition are moved into the new table
first (attaching would fail on them). An advisory lock makes two beats or workers
racing on one day take turns; the second finds the table there.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection as default_connection
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.utils import OperationalError

logger = logging.getLogger(__name__)

EPOCH = date(1970, 1, 1)
# A converted table gets day partitions for the days its rows cover within the
# longest application retention, at most this many days back; older rows go to the
# default partition (retention deletes them row by row). Every partition and its
# indexes is a lock held to the migration's commit: a year of days needs
# PostgreSQL's max_locks_per_transaction above its default of 64 (README, Partitions).
CONVERT_DAYS_BACK = 400
# How long partition DDL waits for a lock before giving up until the next beat (made
# days ahead, dropped hourly: a later try costs nothing). Short, because a DDL waiting
# on the parent or the default partition makes every query after it wait too.
LOCK_TIMEOUT = "1s"


@dataclass(frozen=True)
class Partitioned:
    table: str
    key: str  # the partition key column
    per_day: int  # key units in one day
    # The model's own primary key holds the partition key already: its keys are kept
    # as they are, both ways, instead of getting the key appended (and no ``id``).
    key_in_primary_key: bool = False

    def bound(self, day: date) -> int:
        return (day - EPOCH).days * self.per_day

    def day_table(self, day: date) -> str:
        return f"{self.table}_p{day:%Y%m%d}"

    @property
    def default_table(self) -> str:
        return f"{self.table}_default"


MS_PER_DAY = 86_400_000
TABLES = (
    Partitioned("rumserver_browserevent", "ts_ms", MS_PER_DAY),
    Partitioned("rumserver_span", "start_ns", MS_PER_DAY * 1_000_000),
    Partitioned("correlator_turn", "t_send_ms", MS_PER_DAY),
    Partitioned("rumserver_metricpoint", "time_ns", MS_PER_DAY * 1_000_000, True),
)
BY_TABLE = {p.table: p for p in TABLES}


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_partitioned(cursor: Any, table: str) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [table])
    row = cursor.fetchone()
    return bool(row) and row[0] == "p"


def _exists(cursor: Any, table: str) -> bool:
    cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
    return bool(cursor.fetchone()[0])


def _columns(cursor: Any, table: str) -> list[str]:
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def day_partitions(cursor: Any, spec: Partitioned) -> dict[date, str]:
    """The day partitions the table has now (the default one aside), by day."""
    cursor.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s)",
        [spec.table],
    )
    found = {}
    prefix = f"{spec.table}_p"
    for (name,) in cursor.fetchall():
        if name.startswith(prefix):
            digits = name[len(prefix) :]
            if len(digits) == 8 and digits.isdigit():
                found[date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))] = name
    return found


def _create_day(cursor: Any, spec: Partitioned, day: date) -> bool:
    """Make the day's partition if missing, moving the day's rows out of the default
    partition first. Call inside a transaction. True if it made one."""
    name = spec.day_table(day)
    # One maker a day at a time: a second racer waits here, then finds the table.
    cursor.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [name])
    if _exists(cursor, name):
        return False
    cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    lo, hi = spec.bound(day), spec.bound(day + timedelta(days=1))
    cursor.execute(
        f"CREATE TABLE {_q(name)} (LIKE {_q(spec.table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
    )
    default = spec.default_table
    if _exists(cursor, default):
        # Attaching validates the default partition under an exclusive lock anyway;
        # taking it first keeps a concurrent insert of that day from slipping in
        # between the move and the attach.
        cursor.execute(f"LOCK TABLE {_q(default)} IN ACCESS EXCLUSIVE MODE")
        names = ", ".join(_q(c) for c in _columns(cursor, spec.table))
        cursor.execute(
            f"WITH moved AS (DELETE FROM {_q(default)} WHERE {_q(spec.key)} >= %s "
            f"AND {_q(spec.key)} < %s RETURNING {names}) "
            f"INSERT INTO {_q(name)} ({names}) SELECT {names} FROM moved",
            [lo, hi],
        )
        if cursor.rowcount:
            logger.info("partitions: moved %s rows of %s into %s", cursor.rowcount, day, name)
    cursor.execute(
        f"ALTER TABLE {_q(spec.table)} ATTACH PARTITION {_q(name)} FOR VALUES FROM ({lo}) TO ({hi})"
    )
    return True


def days_ahead(today: date, ahead: int | None = None) -> list[date]:
    """Yesterday (a browser clock a little behind) to ``ahead`` days from today."""
    n = settings.LLMRUM_PARTITION_DAYS_AHEAD if ahead is None else ahead
    return [today + timedelta(days=d) for d in range(-1, n + 1)]


def partitions_ensure(
    days: Iterable[date] | None = None,
    *,
    connection: BaseDatabaseWrapper | None = None,
) -> list[str]:
    """Make the missing day partitions of every partitioned table (by default the days
    of ``days_ahead``). Idempotent; one short transaction a partition, so a lock that
    times out (a long query on the default partition) costs that day only, until the
    next beat. Returns the partitions made."""
    conn = connection or default_connection
    if conn.vendor != "postgresql":
        return []
    wanted = sorted(set(days if days is not None else days_ahead(datetime.now(UTC).date())))
    made = []
    with conn.cursor() as cursor:
        for spec in TABLES:
            if not is_partitioned(cursor, spec.table):
                continue
            have = day_partitions(cursor, spec)
            for day in wanted:
                if day in have:
                    continue
                try:
                    with transaction.atomic(using=conn.alias):
                        if _create_day(cursor, spec, day):
                            made.append(spec.day_table(day))
                except OperationalError as error:  # lock_timeout: next beat tries again
                    logger.warning("partitions: %s not made: %s", spec.day_table(day), error)
    return made


def partitions_drop_before(
    cutoff: date, *, connection: BaseDatabaseWrapper | None = None
) -> list[str]:
    """Drop every day partition wholly before ``cutoff`` (its day < cutoff), one
    ``DROP TABLE`` a day: PostgreSQL detaches and drops it in that statement, without
    reading a row. The default partition is never dropped (its rows go by the row
    deletes of ``correlator.retention``)."""
    conn = connection or default_connection
    if conn.vendor != "postgresql":
        return []
    dropped = []
    with conn.cursor() as cursor:
        for spec in TABLES:
            if not is_partitioned(cursor, spec.table):
                continue
            for day, name in sorted(day_partitions(cursor, spec).items()):
                if day >= cutoff:
                    break
                try:
                    with transaction.atomic(using=conn.alias):
                        cursor.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                        cursor.execute(f"DROP TABLE {_q(name)}")
                    dropped.append(name)
                except OperationalError as error:
                    logger.warning("partitions: %s not dropped: %s", name, error)
    return dropped


# --- converting a table in place (migrations correlator 0013, 0015 and rumserver 0015) ----


def _constraints(cursor: Any, table: str) -> list[tuple[str, str, str]]:
    """(name, type p/u/f, definition) of the table's keys and foreign keys."""
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u', 'f') ORDER BY contype, conname",
        [table],
    )
    return list(cursor.fetchall())


def _plain_indexes(cursor: Any, table: str) -> list[tuple[str, str]]:
    """(name, CREATE INDEX statement) of the indexes that back no constraint."""
    cursor.execute(
        "SELECT c.relname, pg_get_indexdef(x.indexrelid) FROM pg_index x "
        "JOIN pg_class c ON c.oid = x.indexrelid WHERE x.indrelid = to_regclass(%s) "
        "AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = x.indexrelid) "
        "ORDER BY c.relname",
        [table],
    )
    return list(cursor.fetchall())


def _key_columns(definition: str) -> list[str]:
    """The columns of ``PRIMARY KEY (a, b)`` / ``UNIQUE (a, b)``."""
    inside = definition[definition.index("(") + 1 : definition.rindex(")")]
    return [c.strip() for c in inside.split(",")]


def rebuild(cursor: Any, spec: Partitioned, *, partitioned: bool, today: date) -> None:
    """Rebuild ``spec.table`` as a partitioned table (or back as a plain one), rows,
    keys, indexes and foreign keys kept: rename the old table, create the new one
    like it, copy every row in one ``INSERT … SELECT``, drop the old table, then
    build the keys and indexes (faster after the copy than during it). The caller's
    transaction (the migration's) makes it all or nothing; writers wait on the
    table's lock meanwhile, so this is a stop-the-world step (README, Partitions)."""
    table, key = spec.table, spec.key
    if is_partitioned(cursor, table) == partitioned:
        return
    old = f"{table}_unpartitioned" if partitioned else f"{table}_partitioned"
    constraints = _constraints(cursor, table)
    indexes = _plain_indexes(cursor, table)
    if any(d.startswith("CREATE UNIQUE") for _, d in indexes):
        raise RuntimeError(f"{table}: a unique index without a constraint; convert it by hand")
    cursor.execute(f"LOCK TABLE {_q(table)} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(f"ALTER TABLE {_q(table)} RENAME TO {_q(old)}")
    like = f"LIKE {_q(old)} INCLUDING DEFAULTS INCLUDING IDENTITY INCLUDING CONSTRAINTS"
    if partitioned:
        cursor.execute(f"CREATE TABLE {_q(table)} ({like}) PARTITION BY RANGE ({_q(key)})")
        cursor.execute(f"CREATE TABLE {_q(spec.default_table)} PARTITION OF {_q(table)} DEFAULT")
        cursor.execute("SELECT max(retention_days) FROM rumserver_application")
        longest = cursor.fetchone()[0] or settings.LLMRUM_DEFAULT_RETENTION_DAYS
        days = set(days_ahead(today))
        # Day numbers, not dates, until they are known to be in range: a key of year
        # 30,000 is a valid float but no date.
        first = (today - EPOCH).days - min(longest, CONVERT_DAYS_BACK)
        last = (max(days) - EPOCH).days
        cursor.execute(
            f"SELECT DISTINCT floor({_q(key)} / %s)::bigint FROM {_q(old)} "
            f"WHERE {_q(key)} >= %s AND {_q(key)} < %s",
            [spec.per_day, first * spec.per_day, (last + 1) * spec.per_day],
        )
        days |= {EPOCH + timedelta(days=int(d)) for (d,) in cursor.fetchall()}
        for day in sorted(days):
            cursor.execute(
                f"CREATE TABLE {_q(spec.day_table(day))} PARTITION OF {_q(table)} "
                f"FOR VALUES FROM ({spec.bound(day)}) TO ({spec.bound(day + timedelta(days=1))})"
            )
    else:
        cursor.execute(f"CREATE TABLE {_q(table)} ({like})")
    names = ", ".join(_q(c) for c in _columns(cursor, old))
    cursor.execute(
        f"INSERT INTO {_q(table)} ({names}) OVERRIDING SYSTEM VALUE SELECT {names} FROM {_q(old)}"
    )
    if not spec.key_in_primary_key:
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, 'id'), coalesce(max(id), 0) + 1, false) "
            f"FROM {_q(table)}",
            [table],
        )
    cursor.execute(f"DROP TABLE {_q(old)} CASCADE")  # its partitions too, when going back
    for name, kind, definition in constraints:
        if kind in ("p", "u") and not spec.key_in_primary_key:
            # The partition key last in every key on a partitioned table; out again
            # on the way back (PRIMARY KEY (id, ts_ms) -> PRIMARY KEY (id)).
            columns = [c for c in _key_columns(definition) if c != key]
            if partitioned:
                columns.append(key)
            head = "PRIMARY KEY" if kind == "p" else "UNIQUE"
            definition = f"{head} ({', '.join(columns)})"
        cursor.execute(f"ALTER TABLE {_q(table)} ADD CONSTRAINT {_q(name)} {definition}")
    for _, definition in indexes:
        cursor.execute(definition.replace(" ON ONLY ", " ON ", 1))


def convert(schema_editor: Any, tables: list[str], *, partitioned: bool) -> None:
    """A migration's step: rebuild the named tables (``TABLES``) partitioned or back."""
    if schema_editor.connection.vendor != "postgresql":
        return
    today = datetime.now(UTC).date()
    with schema_editor.connection.cursor() as cursor:
        for table in tables:
            rebuild(cursor, BY_TABLE[table], partitioned=partitioned, today=today)
