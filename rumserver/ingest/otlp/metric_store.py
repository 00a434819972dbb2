"""Writing the data points of one OTLP metrics request in bulk.

A point is a thin row (its series id, time, value or histogram), so a point costs
the database one narrow row under one key (time, series). Series are made when first
seen and their ids kept in this process (``SeriesIds``). On PostgreSQL the mapping
has already packed each point as a row of binary COPY (``point_rows``): a request is
one COPY into the points and the minute and hour each point falls in marked for the
rollups (MetricDirty), in one transaction, so a rollup never misses a stored point.
COPY has no ON CONFLICT: a point sent again (an exporter's retry) makes it fail on the
key, and the request is then written again through a temporary table with
``ON CONFLICT DO NOTHING``, so a retry still lands once. SQLite (development) takes
multi-row INSERTs in one transaction and keeps no rollups.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import msgspec
from django.conf import settings
from django.db import IntegrityError, connection, transaction

from rumserver.ingest.otlp import point_rows
from rumserver.ingest.otlp.metrics import KnownSeries, MappedMetrics, SeriesRef, series_key
from rumserver.models import MetricDirty, MetricPoint, MetricSeries
from rumserver.sql import execute_prepared, fetch_prepared, insert_portable

_encode = msgspec.json.Encoder().encode

POINT_TABLE = MetricPoint._meta.db_table
SERIES_TABLE = MetricSeries._meta.db_table
DIRTY_TABLE = MetricDirty._meta.db_table
MINUTE_NS, HOUR_NS = 60 * 10**9, 3600 * 10**9

_COLUMNS = point_rows.COLUMNS  # bench/metrics_ingest COPYs these too
_NAMES = ", ".join(name for name, _ in _COLUMNS)
_CONFLICT = "ON CONFLICT (time_ns, series_id) DO NOTHING"

_COPY_SQL = f"COPY {POINT_TABLE} ({_NAMES}) FROM STDIN (FORMAT BINARY)"
_MARK_SQL = f"""
INSERT INTO {DIRTY_TABLE} (app_id, seconds, start_ns)
SELECT %(app)s::bigint, d.seconds, d.start_ns
FROM unnest(%(seconds)s::smallint[], %(starts)s::bigint[]) AS d(seconds, start_ns)
ON CONFLICT DO NOTHING
"""
# A retry: the same rows through a table of this transaction, each point kept once.
_STAGE = "llmrum_metric_points_in"
_STAGE_SQL = f"CREATE TEMPORARY TABLE {_STAGE} (LIKE {POINT_TABLE}) ON COMMIT DROP"
_STAGE_COPY_SQL = f"COPY {_STAGE} ({_NAMES}) FROM STDIN (FORMAT BINARY)"
_FROM_STAGE_SQL = f"""
INSERT INTO {POINT_TABLE} ({_NAMES})
SELECT {_NAMES} FROM {_STAGE} ORDER BY time_ns, series_id
{_CONFLICT}
"""
_DROP_STAGE_SQL = f"DROP TABLE {_STAGE}"  # a savepoint's caller may write again

_SERIES_SQL = f"""
INSERT INTO {SERIES_TABLE} (app_id, key, service, instance, name, kind, unit, monotonic,
                            temporality, attributes, resource, created_at)
SELECT %(app)s::bigint, s.key, s.service, s.instance, s.name, s.kind, s.unit, s.monotonic,
       s.temporality, s.attributes, s.resource, %(now)s::timestamptz
FROM jsonb_to_recordset(%(series)s::jsonb) AS s(
    key text, service text, instance text, name text, kind smallint, unit text,
    monotonic boolean, temporality smallint, attributes jsonb, resource jsonb)
ORDER BY s.key
ON CONFLICT (app_id, key) DO NOTHING
"""
_SERIES_IDS_SQL = (
    f"SELECT key, id FROM {SERIES_TABLE} WHERE app_id = %(app)s AND key = ANY(%(keys)s::text[])"
)


class SeriesIds:
    """Series ids by application, metric and attributes, for this process. An id is
    kept once the transaction that found or made it has committed (one rolled back
    may have made a series that no longer exists). Bounded: cleared when full."""

    LIMIT = 200_000
    _NONE: KnownSeries = {}

    def __init__(self) -> None:
        self.by_app: dict[int, KnownSeries] = {}
        self.size = 0

    def of(self, app_id: int) -> KnownSeries:
        """What this process knows of ``app_id``'s series (for reading only)."""
        return self.by_app.get(app_id, self._NONE)

    def remember(self, app_id: int, found: list[tuple[SeriesRef, int]]) -> None:
        def keep() -> None:
            if self.size + len(found) > self.LIMIT:
                self.by_app.clear()
                self.size = 0
            known = self.by_app.setdefault(app_id, {})
            for (metric, attributes), series_id in found:
                known.setdefault(metric, {})[attributes] = series_id
            self.size += len(found)

        if connection.vendor == "postgresql":  # SQLite may reuse the ids of a rollback
            transaction.on_commit(keep)


SERIES_IDS = SeriesIds()


def store_metric_points(*, app_id: int, mapped: MappedMetrics, now: datetime) -> None:
    """Store the request's points, all or nothing (series made for them may stay)."""
    if not mapped.accepted_data_points:
        return
    rows = mapped.rows
    if mapped.pending:
        ids = _new_series_ids(app_id, mapped, now)
        rows = rows + [point_rows.with_series(row, ids[index]) for index, row in mapped.pending]
    # In key order (see point_rows), so concurrent requests with the same points take
    # their index locks in one order (no deadlock between two retries of one export).
    rows.sort()
    if connection.vendor == "postgresql":
        _copy(rows, _marks(app_id, mapped.times))
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            insert_portable(
                cursor,
                head=f"INSERT INTO {POINT_TABLE} ({_NAMES})",
                tail=_CONFLICT,
                rows=[list(point_rows.decode(row)) for row in rows],
            )


def _marks(app_id: int, times: set[int]) -> dict[str, Any]:
    """The minutes and hours of these times, for MetricDirty (in one order, so two
    requests lock the marks they share in one order)."""
    minutes = sorted({t - t % MINUTE_NS for t in times})
    hours = sorted({t - t % HOUR_NS for t in minutes})
    return {
        "app": app_id,
        "seconds": [60] * len(minutes) + [3600] * len(hours),
        "starts": minutes + hours,
    }


def _copy(rows: list[bytes], marks: dict[str, Any]) -> None:
    """The rows COPY'd into the points and their periods marked, in one transaction;
    if a point is stored already, again through a temporary table, each point once."""
    import psycopg

    data = point_rows.copy_data(rows)
    prepare = settings.LLMRUM_PG_PREPARE
    try:
        with _transaction() as cursor:
            with cursor.copy(_COPY_SQL) as copy:
                copy.write(data)
            cursor.execute(_MARK_SQL, marks, prepare=prepare)
        return
    except IntegrityError as error:
        if not isinstance(error.__cause__, psycopg.errors.UniqueViolation):
            raise
    with _transaction() as cursor:
        cursor.execute(_STAGE_SQL)
        with cursor.copy(_STAGE_COPY_SQL) as copy:
            copy.write(data)
        cursor.execute(_FROM_STAGE_SQL)
        cursor.execute(_MARK_SQL, marks, prepare=prepare)
        cursor.execute(_DROP_STAGE_SQL)


@contextmanager
def _transaction() -> Iterator[Any]:
    """A psycopg cursor in a transaction of its own, or in a savepoint of the caller's
    (Django's ``atomic``). Its own is psycopg's BEGIN and COMMIT: Django's ``atomic``
    would first run its per-request health check, one more round trip a request.
    psycopg's errors come out as Django's."""
    import psycopg

    with connection.wrap_database_errors:
        if connection.in_atomic_block:
            with transaction.atomic(), psycopg.Cursor(connection.connection) as cursor:
                yield cursor
            return
        connection.ensure_connection()
        with connection.connection.transaction(), psycopg.Cursor(connection.connection) as cursor:
            yield cursor


def _new_series_ids(app_id: int, mapped: MappedMetrics, now: datetime) -> list[int]:
    """The ids of the request's new series (``mapped.new_series`` order), found or
    made in the database (two statements for all of them)."""
    new_series = mapped.new_series
    attributes = mapped.attributes()
    # Two refs may be one series (the same attributes in another order): one key.
    keys = [series_key(s.ref, a) for s, a in zip(new_series, attributes, strict=True)]
    first = {key: index for index, key in reversed(list(enumerate(keys)))}
    described = [
        _described(key, new_series[index].ref, attributes[index], new_series[index].resource)
        for key, index in sorted(first.items())
    ]
    if connection.vendor == "postgresql":
        execute_prepared(
            _SERIES_SQL, {"app": app_id, "now": now, "series": _encode(described).decode()}
        )
        rows = fetch_prepared(_SERIES_IDS_SQL, {"app": app_id, "keys": list(first)})
    else:
        with transaction.atomic():
            MetricSeries.objects.bulk_create(
                [MetricSeries(app_id=app_id, created_at=now, **d) for d in described],
                ignore_conflicts=True,
            )
            rows = list(
                MetricSeries.objects.filter(app_id=app_id, key__in=list(first)).values_list(
                    "key", "id"
                )
            )
    by_key = dict(rows)
    ids = [by_key[key] for key in keys]
    SERIES_IDS.remember(app_id, [(s.ref, i) for s, i in zip(new_series, ids, strict=True)])
    return ids


def _described(
    key: str, ref: SeriesRef, attributes: dict[str, Any], resource: dict[str, Any]
) -> dict[str, Any]:
    service, instance, name, kind, unit, monotonic, temporality = ref[0]
    return {
        "key": key, "service": service, "instance": instance, "name": name, "kind": kind,
        "unit": unit, "monotonic": monotonic, "temporality": temporality,
        "attributes": attributes, "resource": resource,
    }  # fmt: skip
