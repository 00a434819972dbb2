"""Writing the data points of one OTLP metrics request in bulk.

A point is a thin row (its series id, time, value or histogram), so a point costs
the database one narrow row under one key (series, time). Series are made when first
seen and their ids kept in this process (``_SeriesIds``); a request of known series
is one statement on PostgreSQL: the points as one array a column through ``unnest``,
the minute and hour each point falls in marked for the rollups (MetricDirty) in the
same statement, so a rollup never misses a stored point. A point sent again (an
exporter's retry) lands once: its series and time are the key. SQLite (development)
takes multi-row INSERTs in one transaction and keeps no rollups.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from django.db import connection, transaction

from rumserver.ingest.otlp.metrics import MappedMetrics, SeriesRef, series_key
from rumserver.models import MetricDirty, MetricPoint, MetricSeries
from rumserver.sql import execute_prepared, fetch_prepared, insert_portable

_encode = msgspec.json.Encoder().encode

POINT_TABLE = MetricPoint._meta.db_table
SERIES_TABLE = MetricSeries._meta.db_table
DIRTY_TABLE = MetricDirty._meta.db_table
MINUTE_NS, HOUR_NS = 60 * 10**9, 3600 * 10**9

# (column, PostgreSQL array type): the key in its index order, then PointRow's order.
_COLUMNS = (
    ("time_ns", "bigint"), ("series_id", "bigint"), ("start_ns", "bigint"),
    ("value", "float8"), ("int_value", "bigint"), ("count", "bigint"), ("sum", "float8"),
    ("min", "float8"), ("max", "float8"), ("bounds", "jsonb"), ("bucket_counts", "jsonb"),
    ("flags", "integer"),
)  # fmt: skip
_NAMES = ", ".join(name for name, _ in _COLUMNS)
_CONFLICT = "ON CONFLICT (time_ns, series_id) DO NOTHING"

# A column travels as one text value, split by the server: psycopg would dump a list
# item by item in Python. Python's str() of an int or float reads back exactly (nan
# and inf included); "None" is NULL. JSON lists of numbers hold no ";".
_NULL = "None"


def _column(name: str, kind: str) -> str:
    separator = ";" if kind == "jsonb" else ","
    return f"string_to_array(%({name})s, '{separator}', '{_NULL}')::{kind}[]"


_POSTGRES_SQL = f"""
WITH dirty AS (
    INSERT INTO {DIRTY_TABLE} (app_id, seconds, start_ns)
    SELECT %(app)s::bigint, d.seconds, d.start_ns
    FROM unnest(%(dirty_seconds)s::smallint[], %(dirty_starts)s::bigint[]) AS d(seconds, start_ns)
    ON CONFLICT DO NOTHING
)
INSERT INTO {POINT_TABLE} ({_NAMES})
SELECT * FROM unnest({", ".join(_column(n, t) for n, t in _COLUMNS)})
{_CONFLICT}
"""

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


class _SeriesIds:
    """Series ids by application and ref, for this process. An id is kept once the
    transaction that found or made it has committed (one rolled back may have made
    a series that no longer exists). Bounded: cleared when full."""

    LIMIT = 200_000

    def __init__(self) -> None:
        self.known: dict[tuple[int, SeriesRef], int] = {}

    def remember(self, app_id: int, found: dict[SeriesRef, int]) -> None:
        def keep() -> None:
            if len(self.known) + len(found) > self.LIMIT:
                self.known.clear()
            self.known.update(((app_id, ref), series_id) for ref, series_id in found.items())

        if connection.vendor == "postgresql":  # SQLite may reuse the ids of a rollback
            transaction.on_commit(keep)


SERIES_IDS = _SeriesIds()


def store_metric_points(*, app_id: int, mapped: MappedMetrics, now: datetime) -> None:
    """Store the request's points, all or nothing (series made for them may stay)."""
    if not mapped.points:
        return
    ids = _series_ids(app_id, mapped, now)
    # Sorted by the key, so concurrent requests with the same points take their
    # index locks in one order (no deadlock between two retries of one export).
    rows = sorted((row[1], ids[row[0]], *row[2:]) for row in mapped.points)
    if connection.vendor == "postgresql":
        execute_prepared(_POSTGRES_SQL, _postgres_params(app_id, rows))
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            insert_portable(
                cursor,
                head=f"INSERT INTO {POINT_TABLE} ({_NAMES})",
                tail=_CONFLICT,
                rows=[_portable(row) for row in rows],
            )


def _postgres_params(app_id: int, rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    columns = list(zip(*rows, strict=True))
    params: dict[str, Any] = {}
    for (name, kind), column in zip(_COLUMNS, columns, strict=True):
        if kind == "jsonb":
            params[name] = ";".join(_NULL if v is None else _encode(v).decode() for v in column)
        else:
            params[name] = ",".join(map(str, column))
    minutes = {t - t % MINUTE_NS for t in columns[0]}
    hours = {t - t % HOUR_NS for t in minutes}
    params["app"] = app_id
    params["dirty_seconds"] = [60] * len(minutes) + [3600] * len(hours)
    params["dirty_starts"] = [*minutes, *hours]
    return params


def _portable(row: tuple[Any, ...]) -> list[Any]:
    bounds, counts = row[9], row[10]
    return [
        *row[:9],
        None if bounds is None else _encode(bounds).decode(),
        None if counts is None else _encode(counts).decode(),
        row[11],
    ]


def _series_ids(app_id: int, mapped: MappedMetrics, now: datetime) -> dict[SeriesRef, int]:
    """The id of every series of the request's points: from this process's memory,
    else found or made in the database (two statements for all the unknown ones)."""
    known = SERIES_IDS.known
    ids: dict[SeriesRef, int] = {}
    unknown: list[SeriesRef] = []
    for ref in mapped.series:
        series_id = known.get((app_id, ref))
        if series_id is None:
            unknown.append(ref)
        else:
            ids[ref] = series_id
    if not unknown:
        return ids
    found = _find_or_make(app_id, unknown, mapped, now)
    SERIES_IDS.remember(app_id, found)
    return ids | found


def _find_or_make(
    app_id: int, unknown: list[SeriesRef], mapped: MappedMetrics, now: datetime
) -> dict[SeriesRef, int]:
    attributes = mapped.attributes(unknown)
    # Two refs may be one series (the same attributes in another order): one key.
    key_of = {ref: series_key(ref, attributes[ref]) for ref in unknown}
    by_key = {key: ref for ref, key in key_of.items()}
    described = [
        _described(key, ref, attributes[ref], mapped.series[ref][1])
        for key, ref in sorted(by_key.items())
    ]
    if connection.vendor == "postgresql":
        execute_prepared(
            _SERIES_SQL, {"app": app_id, "now": now, "series": _encode(described).decode()}
        )
        rows = fetch_prepared(_SERIES_IDS_SQL, {"app": app_id, "keys": list(by_key)})
    else:
        with transaction.atomic():
            MetricSeries.objects.bulk_create(
                [MetricSeries(app_id=app_id, created_at=now, **d) for d in described],
                ignore_conflicts=True,
            )
            rows = list(
                MetricSeries.objects.filter(app_id=app_id, key__in=list(by_key)).values_list(
                    "key", "id"
                )
            )
    ids = dict(rows)
    return {ref: ids[key] for ref, key in key_of.items()}


def _described(
    key: str, ref: SeriesRef, attributes: dict[str, Any], resource: dict[str, Any]
) -> dict[str, Any]:
    service, instance, name, kind, unit, monotonic, temporality = ref[0]
    return {
        "key": key, "service": service, "instance": instance, "name": name, "kind": kind,
        "unit": unit, "monotonic": monotonic, "temporality": temporality,
        "attributes": attributes, "resource": resource,
    }  # fmt: skip
