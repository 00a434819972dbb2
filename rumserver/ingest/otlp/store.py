"""Writing the spans of one OTLP request and marking their traces dirty, all or
nothing, in bulk: one statement on PostgreSQL (the spans travel as one jsonb
value, the statement is prepared once per connection), multi-row INSERTs in one
transaction on SQLite. A span sent again (an exporter's retry) lands once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from django.db import connection, transaction

from rumserver.ingest.dirty import MARK_SQL, mark_dirty
from rumserver.ingest.otlp.spans import SpanRow
from rumserver.models import Span
from rumserver.sql import execute_prepared, insert_portable

_encode = msgspec.json.Encoder().encode

SPAN_TABLE = Span._meta.db_table

# (column, PostgreSQL type) for every SpanRow field, in SpanRow order.
_COLUMNS = (
    ("trace_id", "text"), ("span_id", "text"), ("parent_span_id", "text"),
    ("trace_state", "text"), ("name", "text"), ("kind", "smallint"), ("start_ns", "bigint"),
    ("end_ns", "bigint"), ("status_code", "smallint"), ("status_message", "text"),
    ("service", "text"), ("attributes", "jsonb"), ("resource", "jsonb"), ("scope", "jsonb"),
    ("events", "jsonb"), ("links", "jsonb"), ("dropped_attributes", "integer"),
    ("truncated", "boolean"), ("gen_ai_operation", "text"), ("gen_ai_provider", "text"),
    ("request_model", "text"), ("response_model", "text"), ("conversation_id", "text"),
    ("input_tokens", "integer"), ("output_tokens", "integer"), ("ttft_s", "float8"),
    ("ttft_source", "text"), ("queue_s", "float8"),
)  # fmt: skip
_JSON_COLUMNS = {name for name, kind in _COLUMNS if kind == "jsonb"}
_NAMES = ", ".join(name for name, _ in _COLUMNS)


_POSTGRES_SQL = f"""
WITH s AS (
    INSERT INTO {SPAN_TABLE} (app_id, received_at, {_NAMES})
    SELECT %(app)s::bigint, %(now)s::timestamptz, {", ".join(f"r.{n}" for n, _ in _COLUMNS)}
    FROM jsonb_to_recordset(%(spans)s::jsonb) AS r({", ".join(f"{n} {t}" for n, t in _COLUMNS)})
    ORDER BY r.trace_id, r.span_id
    -- start_ns: spans are day partitions by it (rumserver.partitions), so it ends the
    -- unique key there; a retry repeats it and still lands once.
    ON CONFLICT (app_id, trace_id, span_id, start_ns) DO NOTHING
), d AS ({MARK_SQL})
SELECT 1
"""


def store_spans(*, app_id: int, rows: list[SpanRow], trace_ids: list[str], now: datetime) -> None:
    if not rows:
        return
    if connection.vendor == "postgresql":
        # msgspec encodes the dataclasses as they are; dataclasses.asdict would deep-copy
        # every attribute dict first (half of a worker's CPU in bench/otlp).
        spans = _encode(rows).decode()
        execute_prepared(
            _POSTGRES_SQL, {"app": app_id, "now": now, "spans": spans, "traces": trace_ids}
        )
        return
    with transaction.atomic():
        _store_portable(app_id=app_id, rows=rows, trace_ids=trace_ids, now=now)


def _portable(name: str, value: Any) -> Any:
    return _encode(value).decode() if name in _JSON_COLUMNS else value


def _store_portable(
    *, app_id: int, rows: list[SpanRow], trace_ids: list[str], now: datetime
) -> None:
    received = connection.ops.adapt_datetimefield_value(now)
    ordered = sorted(rows, key=lambda r: (r.trace_id, r.span_id))
    with connection.cursor() as cursor:
        insert_portable(
            cursor,
            head=f"INSERT INTO {SPAN_TABLE} (app_id, received_at, {_NAMES})",
            tail="ON CONFLICT (app_id, trace_id, span_id) DO NOTHING",
            rows=[
                [app_id, received, *(_portable(name, getattr(row, name)) for name, _ in _COLUMNS)]
                for row in ordered
            ],
        )
        mark_dirty(cursor, app_id=app_id, trace_ids=trace_ids, now=now)
