"""Writing one beacon batch: its session, its events and its dirty traces,
all or nothing.

This is the hottest path in llmrum, so it is hand-written SQL with no model
instances, in two dialects of the same three upserts:

- PostgreSQL: one statement (data-modifying CTEs) in autocommit, so a batch costs
  one round trip; the events travel as a single jsonb parameter, so the
  statement text never changes with the batch size and is prepared once per
  connection (with one parameter per value, a 10-event batch had 130
  parameters, more than psycopg caches, and converting the query cost ~0.4 ms).
- SQLite (the embedded default): the same upserts as three statements in one
  transaction (SQLite has no data-modifying CTEs).

Rows are sorted by their unique keys so that concurrent batches take the index
locks in one order and cannot deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from django.db import connection, transaction

from rumserver.ingest.beacon.parse import ParsedBatch
from rumserver.ingest.beacon.useragent import ParsedUserAgent
from rumserver.ingest.dirty import (
    EVENT_MINUTES_COLUMNS,
    EVENT_MINUTES_ON_CONFLICT,
    EVENT_MINUTES_TABLE,
    MARK_SQL,
    mark_dirty,
    mark_event_minutes,
    minute_of,
)
from rumserver.models import BrowserEvent, BrowserSession
from rumserver.sql import execute_prepared, placeholders

_encode = msgspec.json.Encoder().encode

SESSION_TABLE = BrowserSession._meta.db_table
EVENT_TABLE = BrowserEvent._meta.db_table


@dataclass(frozen=True)
class SessionRow:
    session_id: str
    started_at_ms: float | None
    user_id: str
    sdk_version: str
    user_agent: str
    agent: ParsedUserAgent  # what user_agent says
    client_ip: str | None


def store_batch(*, app_id: int, session: SessionRow, parsed: ParsedBatch, now: datetime) -> None:
    if connection.vendor == "postgresql":
        _store_postgres(app_id=app_id, session=session, parsed=parsed, now=now)
    else:
        with transaction.atomic():
            _store_portable(app_id=app_id, session=session, parsed=parsed, now=now)


# Shared clauses: what happens on a conflict is the same in both dialects.
_SESSION_COLUMNS = (
    "app_id, session_id, started_at_ms, first_seen_at, last_seen_at, user_id, sdk_version, "
    "user_agent, browser, browser_version, os, os_version, device_class, is_bot, client_ip"
)
# A later batch without a user id keeps the one the session has.
_SESSION_ON_CONFLICT = f"""
    ON CONFLICT (app_id, session_id) DO UPDATE SET
        last_seen_at = excluded.last_seen_at,
        user_id = CASE WHEN excluded.user_id <> '' THEN excluded.user_id
                       ELSE {SESSION_TABLE}.user_id END
"""
_EVENT_COLUMNS = (
    "app_id, session_id, event_id, type, name, ts_ms, sent_at_ms, received_at, "
    "trace_id, span_id, turn_span_id, truncated, data"
)
# A retried batch lands once. A web-vitals metric reported again (the SDK uses the
# metric's own id) replaces its earlier value and delta; nothing else is overwritten.
_EVENT_ON_CONFLICT = f"""
    ON CONFLICT (app_id, event_id) DO UPDATE SET
        ts_ms = excluded.ts_ms, sent_at_ms = excluded.sent_at_ms,
        received_at = excluded.received_at, data = excluded.data,
        truncated = excluded.truncated
    WHERE {EVENT_TABLE}.type = 'vital' AND excluded.type = 'vital'
"""

# PostgreSQL: events are day partitions by ts_ms (rumserver.partitions), so their
# unique key ends with ts_ms. A retried batch repeats each event's ts_ms and still
# lands once; a vital reported again has a new ts_ms (perhaps another day): ``v``
# deletes its earlier row and the new one is inserted; the same vital with the same
# time is updated as above. The earlier row is looked for within a day of the new one
# (a page's metric is reported again while the page is open), so in the partitions of
# those days only.
_PG_EVENT_ON_CONFLICT = f"""
    ON CONFLICT (app_id, event_id, ts_ms) DO UPDATE SET
        sent_at_ms = excluded.sent_at_ms, received_at = excluded.received_at,
        data = excluded.data, truncated = excluded.truncated
    WHERE {EVENT_TABLE}.type = 'vital' AND excluded.type = 'vital'
"""

_VITAL_WINDOW_MS = 86_400_000

# Vitals and errors mark their receive minute dirty for the pages' rollups, and a
# vital reported again the minute its earlier row was received in, which it leaves
# (updated in place or deleted): ``m``, with ``EVENT_KINDS`` the types counted.
EVENT_KINDS = frozenset({"vital", "error"})

# Reading and moving a vital reported again: only in a batch with vitals, the
# statement below without them otherwise. PostgreSQL cannot prune either part's day
# partitions as it plans (their bounds come from the batch's rows), so a prepared plan
# holding them opens and locks every day partition of the events at each execution: a
# batch of turn events took 40 % more of PostgreSQL's time with 31 days of partitions
# than with a few (bench/scale --rows 0).
_EARLIER_VITALS_SQL = f"""
earlier_vitals AS (
    SELECT o.id, o.moved, o.received_at
    FROM jsonb_to_recordset(%(events)s::jsonb) AS r(event_id text, type text, ts_ms float8)
    CROSS JOIN LATERAL (
        SELECT id, ts_ms <> r.ts_ms AS moved, received_at FROM {EVENT_TABLE}
        WHERE app_id = %(app)s::bigint AND event_id = r.event_id AND type = 'vital'
          AND ts_ms > r.ts_ms - {_VITAL_WINDOW_MS} AND ts_ms < r.ts_ms + {_VITAL_WINDOW_MS}
        OFFSET 0
    ) AS o
    WHERE r.type = 'vital'
), v AS (
    -- Skipped whole (a one-time filter) when no vital was reported again at a new time.
    DELETE FROM {EVENT_TABLE} x
    WHERE EXISTS (SELECT 1 FROM earlier_vitals WHERE moved)
      AND x.id = ANY(ARRAY(SELECT id FROM earlier_vitals WHERE moved))
),"""
_EARLIER_VITALS_MINUTES_SQL = """
        UNION
        SELECT date_trunc('minute', received_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'
        FROM earlier_vitals"""


def _postgres_sql(*, vitals: bool) -> str:
    earlier_vitals = _EARLIER_VITALS_SQL if vitals else ""
    their_minutes = _EARLIER_VITALS_MINUTES_SQL if vitals else ""
    return f"""
WITH {earlier_vitals} m AS (
    INSERT INTO {EVENT_MINUTES_TABLE} ({EVENT_MINUTES_COLUMNS})
    SELECT %(app)s::bigint, 'minute', k.minute, %(now)s::timestamptz, %(now)s::timestamptz
    FROM (
        SELECT %(minute)s::timestamptz AS minute WHERE %(reported)s::boolean{their_minutes}
    ) AS k
    ORDER BY k.minute
    {EVENT_MINUTES_ON_CONFLICT}
), s AS (
    INSERT INTO {SESSION_TABLE} ({_SESSION_COLUMNS})
    VALUES (%(app)s::bigint, %(session_id)s, %(started)s::float8, %(now)s::timestamptz,
            %(now)s::timestamptz, %(user_id)s, %(sdk)s, %(ua)s, %(browser)s, %(browser_version)s,
            %(os)s, %(os_version)s, %(device)s, %(bot)s::boolean, %(ip)s::inet)
    {_SESSION_ON_CONFLICT}
    RETURNING id
), e AS (
    INSERT INTO {EVENT_TABLE} ({_EVENT_COLUMNS})
    SELECT %(app)s::bigint, s.id, r.event_id, r.type, r.name, r.ts_ms, %(sent_at)s::float8,
           %(now)s::timestamptz, r.trace_id, r.span_id, r.turn_span_id, r.truncated, r.data
    FROM s, jsonb_to_recordset(%(events)s::jsonb) AS r(
        event_id text, type text, name text, ts_ms float8, trace_id text, span_id text,
        turn_span_id text, truncated boolean, data jsonb)
    ORDER BY r.event_id
    {_PG_EVENT_ON_CONFLICT}
), d AS ({MARK_SQL})
SELECT id FROM s
"""


# By whether the batch has a vital.
_POSTGRES_SQL = {vitals: _postgres_sql(vitals=vitals) for vitals in (True, False)}


def _store_postgres(
    *, app_id: int, session: SessionRow, parsed: ParsedBatch, now: datetime
) -> None:
    events = [
        {
            "event_id": r.event_id,
            "type": r.type,
            "name": r.name,
            "ts_ms": r.ts_ms,
            "trace_id": r.trace_id,
            "span_id": r.span_id,
            "turn_span_id": r.turn_span_id,
            "truncated": r.truncated,
            "data": r.data,
        }
        for r in parsed.rows
    ]
    params = {
        "app": app_id,
        "session_id": session.session_id,
        "started": session.started_at_ms,
        "now": now,
        "user_id": session.user_id,
        "sdk": session.sdk_version,
        "ua": session.user_agent,
        "browser": session.agent.browser,
        "browser_version": session.agent.browser_version,
        "os": session.agent.os,
        "os_version": session.agent.os_version,
        "device": session.agent.device_class,
        "bot": session.agent.is_bot,
        "ip": session.client_ip,
        "sent_at": parsed.batch.sent_at,
        "events": _encode(events).decode(),
        "traces": parsed.trace_ids,
        "minute": minute_of(now),
        "reported": any(r.type in EVENT_KINDS for r in parsed.rows),
    }
    # One statement is atomic by itself (and joins the caller's transaction if any).
    execute_prepared(_POSTGRES_SQL[any(r.type == "vital" for r in parsed.rows)], params)


def _store_portable(
    *, app_id: int, session: SessionRow, parsed: ParsedBatch, now: datetime
) -> None:
    received = connection.ops.adapt_datetimefield_value(now)
    agent = session.agent
    # The minutes the batch's vitals and errors are received in, and those its vitals
    # reported again leave (read before the upsert moves them).
    marked = [now] if any(r.type in EVENT_KINDS for r in parsed.rows) else []
    vitals = [r.event_id for r in parsed.rows if r.type == "vital"]
    if vitals:
        marked += BrowserEvent.objects.filter(
            app_id=app_id, event_id__in=vitals, type="vital"
        ).values_list("received_at", flat=True)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {SESSION_TABLE} ({_SESSION_COLUMNS}) "
            f"VALUES {placeholders(15, 1)} {_SESSION_ON_CONFLICT} RETURNING id",
            [
                app_id,
                session.session_id,
                session.started_at_ms,
                received,
                received,
                session.user_id,
                session.sdk_version,
                session.user_agent,
                agent.browser,
                agent.browser_version,
                agent.os,
                agent.os_version,
                agent.device_class,
                agent.is_bot,
                session.client_ip,
            ],
        )
        session_pk = cursor.fetchone()[0]

        rows = sorted(parsed.rows, key=lambda r: r.event_id)
        params: list[Any] = []
        for r in rows:
            params += [
                app_id,
                session_pk,
                r.event_id,
                r.type,
                r.name,
                r.ts_ms,
                parsed.batch.sent_at,
                received,
                r.trace_id,
                r.span_id,
                r.turn_span_id,
                r.truncated,
                _encode(r.data).decode(),
            ]
        cursor.execute(
            f"INSERT INTO {EVENT_TABLE} ({_EVENT_COLUMNS}) "
            f"VALUES {placeholders(13, len(rows))} {_EVENT_ON_CONFLICT}",
            params,
        )

        mark_dirty(cursor, app_id=app_id, trace_ids=parsed.trace_ids, now=now)
        mark_event_minutes(cursor, app_id=app_id, received=marked, now=now)
