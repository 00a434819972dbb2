"""Ingest services: the one call each ingest view makes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from rumserver.applications import IngestApp
from rumserver.beacon import ParsedBatch, parse_batch
from rumserver.beacon_schema import TEXT_LIMITS
from rumserver.hints import hints
from rumserver.models import BrowserEvent, BrowserSession, DirtyTrace
from rumserver.useragent import parse_user_agent


@dataclass(frozen=True)
class BeaconResult:
    accepted: int
    rejected: list[dict[str, Any]]

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected}


def beacon_ingest(
    *,
    app: IngestApp,
    body: bytes,
    user_agent: str,
    client_ip: str | None,
    now: datetime,
) -> BeaconResult:
    """Validate a beacon batch and store it: session, events and dirty traces in
    one transaction, then (after commit) nudge the correlator."""
    parsed = parse_batch(body, max_events=settings.LLMRUM_BEACON_MAX_EVENTS)
    if parsed.rows:
        with transaction.atomic():
            session_pk = _session_upsert(
                app=app, parsed=parsed, user_agent=user_agent, client_ip=client_ip, now=now
            )
            _events_insert(app=app, session_pk=session_pk, parsed=parsed, now=now)
            _dirty_traces_mark(app_id=app.id, trace_ids=parsed.trace_ids, now=now)
            if parsed.trace_ids:
                transaction.on_commit(hints.nudge)
    return BeaconResult(accepted=len(parsed.rows), rejected=parsed.rejected)


# The writes below are hand-written SQL because this is the hottest path in
# llmrum: one multi-row statement per table, no model instances. The SQL is the
# common subset of PostgreSQL and SQLite (>= 3.35: ON CONFLICT, RETURNING).


def _dt(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _session_upsert(
    *, app: IngestApp, parsed: ParsedBatch, user_agent: str, client_ip: str | None, now: datetime
) -> int:
    batch = parsed.batch
    ua_text = user_agent[:512]
    ua = parse_user_agent(ua_text)
    user_id = (batch.user.id if batch.user else "")[: TEXT_LIMITS["default"]][:128]
    table = BrowserSession._meta.db_table
    sql = f"""
        INSERT INTO {table} (app_id, session_id, started_at_ms, first_seen_at, last_seen_at,
            user_id, sdk_version, user_agent, browser, browser_version, os, os_version,
            device_class, is_bot, client_ip)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (app_id, session_id) DO UPDATE SET
            last_seen_at = excluded.last_seen_at,
            user_id = CASE WHEN excluded.user_id <> '' THEN excluded.user_id
                           ELSE {table}.user_id END
        RETURNING id
    """
    params = [
        app.id,
        batch.session.id,
        batch.session.started_at,
        _dt(now),
        _dt(now),
        user_id,
        batch.sdk.version[:32],
        ua_text,
        ua.browser,
        ua.browser_version,
        ua.os,
        ua.os_version,
        ua.device_class,
        ua.is_bot,
        client_ip if settings.LLMRUM_STORE_CLIENT_IP else None,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.fetchone()[0])


_EVENT_COLUMNS = (
    "app_id, session_id, event_id, type, name, ts_ms, sent_at_ms, received_at, "
    "trace_id, span_id, turn_span_id, truncated, data"
)


def _events_insert(*, app: IngestApp, session_pk: int, parsed: ParsedBatch, now: datetime) -> None:
    table = BrowserEvent._meta.db_table
    # Sorted so that concurrent batches take the unique-index locks in one order.
    rows = sorted(parsed.rows, key=lambda r: r.event_id)
    received = _dt(now)
    sent_at = parsed.batch.sent_at
    placeholders = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"] * len(rows))
    params: list[Any] = []
    for r in rows:
        params += [
            app.id, session_pk, r.event_id, r.type, r.name, r.ts_ms, sent_at, received,
            r.trace_id, r.span_id, r.turn_span_id, r.truncated,
            json.dumps(r.data, separators=(",", ":"), ensure_ascii=False),
        ]  # fmt: skip
    # A retried batch lands once. A web-vitals metric reported again (same id:
    # the SDK uses the metric's id) replaces its earlier value and delta.
    sql = f"""
        INSERT INTO {table} ({_EVENT_COLUMNS}) VALUES {placeholders}
        ON CONFLICT (app_id, event_id) DO UPDATE SET
            ts_ms = excluded.ts_ms, sent_at_ms = excluded.sent_at_ms,
            received_at = excluded.received_at, data = excluded.data,
            truncated = excluded.truncated
        WHERE {table}.type = 'vital' AND excluded.type = 'vital'
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _dirty_traces_mark(*, app_id: int, trace_ids: list[str], now: datetime) -> None:
    if not trace_ids:
        return
    table = DirtyTrace._meta.db_table
    placeholders = ", ".join(["(%s, %s, %s, %s)"] * len(trace_ids))
    params: list[Any] = []
    for trace_id in trace_ids:  # sorted by the caller: one lock order for every request
        params += [app_id, trace_id, _dt(now), _dt(now)]
    sql = f"""
        INSERT INTO {table} (app_id, trace_id, first_marked_at, last_marked_at)
        VALUES {placeholders}
        ON CONFLICT (app_id, trace_id) DO UPDATE SET last_marked_at = excluded.last_marked_at
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
