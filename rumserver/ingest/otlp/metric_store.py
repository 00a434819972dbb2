"""Writing the data points of one OTLP metrics request, all or nothing, in bulk: one
statement on PostgreSQL (the points travel as one jsonb value, the statement is
prepared once per connection), multi-row INSERTs in one transaction on SQLite. A
point sent again (an exporter's retry) lands once: its series and time are unique."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from django.db import connection, transaction

from rumserver.ingest.otlp.metrics import MetricRow
from rumserver.models import MetricPoint
from rumserver.sql import execute_prepared, insert_portable

_encode = msgspec.json.Encoder().encode

METRIC_TABLE = MetricPoint._meta.db_table

# (column, PostgreSQL type) for every MetricRow field, in MetricRow order.
_COLUMNS = (
    ("service", "text"), ("instance", "text"), ("name", "text"), ("unit", "text"),
    ("kind", "smallint"), ("series", "text"), ("time_ns", "bigint"), ("start_ns", "bigint"),
    ("value", "float8"), ("monotonic", "boolean"), ("temporality", "smallint"),
    ("count", "bigint"), ("sum", "float8"), ("min", "float8"), ("max", "float8"),
    ("bounds", "jsonb"), ("bucket_counts", "jsonb"), ("flags", "integer"),
    ("attributes", "jsonb"), ("resource", "jsonb"),
)  # fmt: skip
_JSON_COLUMNS = {name for name, kind in _COLUMNS if kind == "jsonb"}
_FLOAT_COLUMNS = {name for name, kind in _COLUMNS if kind == "float8"}
_NAMES = ", ".join(name for name, _ in _COLUMNS)
_CONFLICT = "ON CONFLICT (app_id, series, time_ns) DO NOTHING"

# Sorted by the unique key, so concurrent requests with the same points take their
# index locks in one order (no deadlock between two retries of one export).
_POSTGRES_SQL = f"""
INSERT INTO {METRIC_TABLE} (app_id, received_at, {_NAMES})
SELECT %(app)s::bigint, %(now)s::timestamptz, {", ".join(f"r.{n}" for n, _ in _COLUMNS)}
FROM jsonb_to_recordset(%(points)s::jsonb) AS r({", ".join(f"{n} {t}" for n, t in _COLUMNS)})
ORDER BY r.series, r.time_ns
{_CONFLICT}
"""


def store_metric_points(*, app_id: int, rows: list[MetricRow], now: datetime) -> None:
    if not rows:
        return
    if connection.vendor == "postgresql":
        points = _encode(rows).decode()
        execute_prepared(_POSTGRES_SQL, {"app": app_id, "now": now, "points": points})
        return
    with transaction.atomic():
        _store_portable(app_id=app_id, rows=rows, now=now)


def _portable(name: str, value: Any) -> Any:
    if name in _JSON_COLUMNS:
        return _encode(value).decode()
    if name in _FLOAT_COLUMNS and isinstance(value, str):
        return float(value)  # "NaN" and the infinities (SQLite stores NaN as NULL)
    return value


def _store_portable(*, app_id: int, rows: list[MetricRow], now: datetime) -> None:
    received = connection.ops.adapt_datetimefield_value(now)
    ordered = sorted(rows, key=lambda r: (r.series, r.time_ns))
    with connection.cursor() as cursor:
        insert_portable(
            cursor,
            head=f"INSERT INTO {METRIC_TABLE} (app_id, received_at, {_NAMES})",
            tail=_CONFLICT,
            rows=[
                [app_id, received, *(_portable(name, getattr(row, name)) for name, _ in _COLUMNS)]
                for row in ordered
            ],
        )
