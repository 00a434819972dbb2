"""Query plans that hold without statistics (DESIGN.md §10.7).

A fresh deployment, a restore, a new partition, or PostgreSQL with autovacuum off:
the planner has no statistics, only the tables' sizes. It then takes every equality
to keep 1 row in 200, so ``app_id = 3`` looks as selective as ``trace_id = '…'``, and
an index led by ``app_id`` (smaller, partial) wins: every row of the application read
per key. bench/stitch saw it: 130 turns/s on a never-analysed backlog, 1,788 after
ANALYZE, the cost growing with the square of the backlog.

This module loads tables of realistic size (tens of thousands of events and spans
over three applications, by ``INSERT … SELECT generate_series``) with no statistics at
all, runs each hot path for real while recording every statement it sends, and
EXPLAINs each of them (FORMAT JSON, the parameters the path used; the statements
``rumserver.sql`` prepares also as PostgreSQL's generic plan, which a worker's
connection keeps using once it has chosen it). A plan fails on:

- a sequential scan of a big table (one this module filled with 1,000 rows or more),
  except a list of primary keys the planner expects to be a tenth of the table or more
  (the sweep deleting the batch it claimed): that estimate comes from the key's
  uniqueness, not from statistics;
- an index scan of a big table bounded by nothing but ``app_id`` (or by nothing): every
  row of the application, unless a LIMIT above it stops it early (the newest 50
  traces read backwards from the (app, start, id) index).

What it covers, path by path (the statements are found by running the path, so every
statement a path sends is checked; each path must send from the functions named in
``PATHS``, so that a query moved elsewhere is noticed):

- ingest, ``POST /rum/v1/beacon``: the session, events and dirty-trace upserts
  (``rumserver.ingest.beacon.store``), the application by its public key;
- ingest, ``POST /v1/traces``: the span and dirty-trace upserts, the application by
  its token (and nothing else: roles are the stitch's);
- ingest, ``POST /api/v1/scores``: the score and its dirty trace (``rumserver.ingest.dirty``);
- the sweep (``correlator.stitch.sweep.sweep_run``): the claim of dirty traces, the reads of
  ``correlator.stitch.load`` (spans, turn events, clock samples), the regenerated turns
  of ``correlator.selectors``, the write statement of ``correlator.stitch.store`` with its
  subqueries, the claimed rows' delete, the restitch queue; the rollup claim, rebuild
  (turns with their trace and session, conversation openers, feedback, hallucination
  scores, server-only traces, child rows), delete, insert and marks
  (``correlator.analytics.rollups``); the finalize update and the sweep record;
- the read API: ``GET /api/v1/traces`` of one application (the newest page, the next
  by its cursor, an hour by time), ``GET /api/v1/traces/<id>`` with its spans,
  ``GET /api/v1/metrics`` exact (one hour) and from rollups (three days), whole and
  grouped by model and by device (``correlator.analytics.figures``, the turns of
  ``correlator.analytics.exact``, the rollup readers of ``correlator.analytics.windows``);
- the trace search (``GET /api/v1/traces`` by a trace, session, conversation and user
  id, by a span attribute, by a score name) and the sessions index, two pages;
- the report pages that read browser events: ``/reports/vitals/`` and ``/reports/errors/``
  over an hour and a week: their rollups' dirty marks and rows, the raw reports of the
  edge minutes, and the sessions they name, by key (``correlator.analytics.event_rollups``).
- ``GET /metrics``'s RUM figures: the day rows by model of every application
  (``correlator.rum_metrics``).
- turns, day partitions by send time like events and spans (rumserver.partitions), as
  the trace list reads them: plain, filtered by the turn and its session over a time
  range, the report pages of the list, of traces and of a session. A trace reaches its turn
  by the turn's whole key, ``t_send_ms = trace.start_ms`` (correlator.models.TraceOfTurn):
  by trace id alone the planner, without statistics, no longer knew a trace has one
  turn and hashed every turn per page. And those paths with a month of (never analysed)
  turn partitions ahead: each trace's turn is read from its own partition only
  (``test_turn_reads_touch_their_partitions_only``).

Not covered: trace lists filtered by a turn's outcome or model with no time range.
Without statistics PostgreSQL expects a handful of matches and sorts every trace of
the application instead of walking the index until a page is full; with statistics
it walks. No index or query shape of one statement fixes that for every filter.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connection, models, transaction
from django.db.models import F
from django.test import Client
from django.utils import timezone
from psycopg import sql

from correlator import selectors
from correlator.models import Conversation, DirtyRollup, Rollup, Trace, Turn
from correlator.rum_metrics import rum_series
from correlator.stitch.sweep import sweep_run
from rumserver import sql as llmrum_sql
from rumserver.models import (
    BrowserEvent,
    BrowserSession,
    DirtyEventRollup,
    DirtyTrace,
    Score,
    Span,
)
from rumserver.partitions import partitions_drop_before, partitions_ensure
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

ROOT = Path(__file__).resolve().parents[2]
BIG = 1_000  # rows from which a table is big: no sequential scan, no whole-application scan
TURNS = 20_000  # over three days, in sessions of 5
BACKLOG = 3_000  # the newest turns, not stitched yet: the sweep's backlog
DAY_MS = 86_400_000


# --- the data: never analysed -----------------------------------------------------------


def _llmrum_tables() -> list[str]:
    """The tables, and the day partitions of the partitioned ones with their default
    partition (rumserver.partitions): a plan names the partitions it reads, and each
    partition has statistics (and a row count) of its own."""
    tables = sorted(
        m._meta.db_table
        for m in (BrowserSession, BrowserEvent, Span, DirtyTrace, Score)
        + (Trace, Turn, Conversation, Rollup, DirtyRollup)
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = ANY(%s::regclass[])",
            [tables],
        )
        return sorted(tables + [name for (name,) in cursor.fetchall()])


def _leaf_tables(tables: list[str]) -> list[str]:
    """Those that hold rows themselves (not a partitioned parent): the ones with
    storage options such as autovacuum_enabled."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname FROM pg_class WHERE oid = ANY(%s::regclass[]) AND relkind = 'r'",
            [tables],
        )
        return sorted(name for (name,) in cursor.fetchall())


def _forget_statistics(tables: list[str]) -> None:
    """The tables and their indexes as a fresh deployment or a restore has them: no
    column statistics, no row count from a VACUUM or ANALYZE. Within this module's
    transaction (rolled back at the end): an earlier test of the session may have
    committed rows that autovacuum then analysed. Autovacuum is turned off for them
    too (it could not see the uncommitted rows anyway)."""
    with connection.cursor() as cursor:
        for table in _leaf_tables(tables):
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        cursor.execute("DELETE FROM pg_statistic WHERE starelid = ANY(%s::regclass[])", [tables])
        cursor.execute(
            "UPDATE pg_class SET reltuples = -1, relpages = 0, relallvisible = 0 "
            "WHERE oid = ANY(%s::regclass[]) OR oid IN "
            "(SELECT indexrelid FROM pg_index WHERE indrelid = ANY(%s::regclass[]))",
            [tables, tables],
        )


def _literal(value: Any) -> str:
    return sql.Literal(value).as_string(connection.connection)


def _fill(model: type[models.Model], source: str, /, **columns: str) -> None:
    """INSERT INTO the model's table one row per row of ``source`` (a FROM clause),
    each column from its SQL expression in ``columns``, the others at the model's
    default: the multi-row insert this module loads everything with."""
    names, exprs = [], []
    for f in model._meta.concrete_fields:
        if f.column in columns:
            expr = columns.pop(f.column)
        elif f.primary_key:
            continue
        elif isinstance(f, models.JSONField):
            expr = f"{_literal(json.dumps(f.get_default()))}::jsonb"
        else:
            expr = _literal(f.get_default())
        names.append(f.column)
        exprs.append(expr)
    assert not columns, f"no such columns in {model.__name__}: {sorted(columns)}"
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({', '.join(names)}) "
            f"SELECT {', '.join(exprs)} FROM {source}"
        )


def _next_id(model: type[models.Model]) -> int:
    """The id to start from, and the sequence moved past what is inserted from it
    (ingest adds rows during the paths)."""
    table = model._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}")
        first = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), %s)", [first + 1_000_000]
        )
    return first


@dataclass
class Store:
    apps: list[Any]  # CreatedApplication, the biggest first
    staff: User
    now: datetime
    start_ms: float  # the first turn's send time
    rows: dict[str, int] = field(default_factory=dict)  # table -> rows loaded
    indexes: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # -> table, columns

    def turn_ms(self, g: int) -> float:
        return self.start_ms + g * 3 * DAY_MS / TURNS


def _load(store: Store) -> None:
    """Twenty thousand turns in four thousand sessions over three days, spread 6:3:1
    over three applications: each turn's beacon events (the turn, a page view and a
    vital a session, feedback on some), its three OTLP spans (none for 2 %), and for
    all but the newest ``BACKLOG`` turns the stitched trace, turn and browser span; a
    hallucination score on a fifth of them; rollups of every minute, hour and day;
    the backlog's dirty traces, some server-only traces, and dirty rollup minutes."""
    a, b, c = (created.application.pk for created in store.apps)
    session_base, trace_base = _next_id(BrowserSession), _next_id(Trace)
    stitched = TURNS - BACKLOG
    # Per turn g (1..TURNS): its session s, application, times and ids.
    turns = (
        f"(SELECT g, (g - 1) / 5 AS s, "
        f"CASE WHEN ((g - 1) / 5) % 10 < 6 THEN {a} WHEN ((g - 1) / 5) % 10 < 9 THEN {b} "
        f"ELSE {c} END AS app, "
        f"{store.start_ms} + g * {3 * DAY_MS / TURNS}::float8 AS t, "
        "md5('t' || g) AS tid, left(md5('b' || g), 16) AS sid, "
        "(ARRAY['llama-3.1-8b', 'gpt-4o-mini', 'claude-3-5-haiku'])[g % 3 + 1] AS model, "
        "CASE g % 20 WHEN 0 THEN 'stopped' WHEN 1 THEN 'error' WHEN 2 THEN 'abandoned' "
        "ELSE 'completed' END AS outcome "
        f"FROM generate_series(1, {TURNS}) AS g) AS x"
    )
    _fill(
        BrowserSession,
        f"generate_series(0, {TURNS // 5 - 1}) AS s",
        id=f"{session_base} + s",
        app_id=f"CASE WHEN s % 10 < 6 THEN {a} WHEN s % 10 < 9 THEN {b} ELSE {c} END",
        session_id="'sess-' || s",
        first_seen_at=f"to_timestamp(({store.start_ms} + s * 5 * {3 * DAY_MS / TURNS}) / 1000)",
        last_seen_at=f"to_timestamp(({store.start_ms} + s * 5 * {3 * DAY_MS / TURNS}) / 1000)",
        user_agent=_literal(factories.CHROME_UA),
        browser="(ARRAY['Chrome', 'Safari', 'Firefox'])[s % 3 + 1]",
        os="(ARRAY['Windows', 'macOS', 'iOS', 'Linux'])[s % 4 + 1]",
        device_class="(ARRAY['desktop', 'mobile'])[s % 2 + 1]",
        user_id="CASE WHEN s % 3 > 0 THEN 'user-' || (s % 700) ELSE '' END",
    )
    turn_data = (
        "jsonb_build_object('type', 'turn', 'id', 'e-' || g, 'ts', t + 1820, 'trace_id', tid, "
        "'span_id', sid, 'conversation_id', 'conv-' || s, 'turn_index', (g - 1) % 5, "
        "'url', 'https://chat.example.com/api/chat', 'method', 'POST', 'status', 200, "
        "'t_send', t, 't_headers', t + 300, 't_first_token', t + 620, "
        "'t_last_token', t + 1780, 't_end', t + 1820, 'chunks', 31, "
        "'tbt_summary', jsonb_build_object('count', 29, 'p50', 40, 'p95', 41, 'max', 44), "
        "'output_tokens', 30, 'model', model, 'outcome', outcome) "
        "|| CASE WHEN g % 5 = 0 THEN jsonb_build_object('server_timing', jsonb_build_array("
        "jsonb_build_object('name', 'total', 'duration', 240), jsonb_build_object("
        "'name', 'llmrum-now', 'description', (t + 280)::text))) ELSE '{}' END "
        "|| CASE WHEN g % 50 = 0 AND (g - 1) % 5 > 0 THEN jsonb_build_object("
        "'regenerate_of', left(md5('b' || (g - 1)), 16)) ELSE '{}' END"
    )
    # The turn event, and per session its page view and vital; feedback and edits
    # about some turns (turn_span_id); a JavaScript error now and then.
    events = (
        f"{turns} CROSS JOIN generate_series(0, 5) AS k "
        "WHERE k = 0 OR (k IN (1, 4) AND (g - 1) % 5 = 0) OR (k = 2 AND g % 12 = 0) "
        "OR (k = 3 AND g % 25 = 0) OR (k = 5 AND g % 40 = 0)"
    )
    _fill(
        BrowserEvent,
        events,
        app_id="app",
        session_id=f"{session_base} + s",
        event_id="k || '-' || g",
        type="(ARRAY['turn', 'page_view', 'feedback', 'action', 'vital', 'error'])[k + 1]",
        name="CASE k WHEN 3 THEN 'edit' WHEN 4 THEN 'LCP' ELSE '' END",
        ts_ms="t + 1820",
        sent_at_ms="t + 1850",
        received_at="to_timestamp((t + 2000) / 1000)",
        trace_id="CASE k WHEN 0 THEN tid ELSE '' END",
        span_id="CASE k WHEN 0 THEN sid ELSE '' END",
        turn_span_id="CASE WHEN k IN (2, 3) THEN sid ELSE '' END",
        data=f'CASE k WHEN 0 THEN {turn_data} WHEN 2 THEN \'{{"value": "down"}}\' '
        "WHEN 4 THEN jsonb_build_object('value', 1200 + g % 900, 'page_url', "
        "'https://chat.example.com/c/' || s) "
        "WHEN 5 THEN jsonb_build_object('message', 'TypeError: x', 'stack', "
        "'TypeError: x\n    at f (https://chat.example.com/app.js:1:' || g % 3 || ')') "
        "ELSE '{}' END",
    )
    # The gateway's SERVER span (parent: the browser span), its OpenAI client span and
    # vLLM's; and each stitched turn's browser span.
    _fill(
        Span,
        f"{turns} CROSS JOIN generate_series(0, 3) AS k "
        f"WHERE (k < 3 AND g % 50 <> 7) OR (k = 3 AND g <= {stitched})",
        app_id="app",
        trace_id="tid",
        span_id="CASE k WHEN 3 THEN sid ELSE left(md5(k || 's' || g), 16) END",
        parent_span_id="CASE k WHEN 0 THEN sid WHEN 3 THEN '' "
        "ELSE left(md5((k - 1) || 's' || g), 16) END",
        role="(ARRAY['service', 'service', 'model', 'browser'])[k + 1]",
        service="(ARRAY['chat-gateway', 'chat-gateway', 'vllm', 'browser'])[k + 1]",
        name="(ARRAY['POST /api/chat', 'chat ' || model, 'llm_request', 'POST chat'])[k + 1]",
        kind="(ARRAY[2, 3, 2, 3])[k + 1]",
        start_ns="((t + (ARRAY[40, 60, 90, 0])[k + 1]) * 1000000)::bigint",
        end_ns="((t + 1800 - 10 * k) * 1000000)::bigint",
        received_at="to_timestamp((t + 5000) / 1000)",
        gen_ai_operation="CASE k WHEN 1 THEN 'chat' ELSE '' END",
        request_model="CASE WHEN k IN (1, 2) THEN model ELSE '' END",
        input_tokens="CASE WHEN k IN (1, 2) THEN 812 END",
        output_tokens="CASE WHEN k IN (1, 2) THEN 30 END",
        attributes="CASE k WHEN 1 THEN jsonb_build_object('gen_ai.request.model', model, "
        "'app.request_id', 'req-' || g, 'gen_ai.usage.input_tokens', 812) ELSE '{}' END",
        ttft_s="CASE k WHEN 2 THEN 0.45 END",
        queue_s="CASE k WHEN 2 THEN 0.03 END",
    )
    done = f"{turns} WHERE g <= {stitched}"
    _fill(
        Trace,
        done,
        id=f"{trace_base} + g",
        app_id="app",
        trace_id="tid",
        state="'final'",
        linked="g % 50 <> 7",
        start_ms="t",
        end_ms="t + 1820",
        span_count="4",
        last_received_at="to_timestamp((t + 5000) / 1000)",
        stitched_at="to_timestamp((t + 6000) / 1000)",
    )
    _fill(
        Turn,
        done,
        app_id="app",
        trace_id=f"{trace_base} + g",
        session_id=f"{session_base} + s",
        span_id="sid",
        conversation_id="'conv-' || s",
        turn_index="(g - 1) % 5",
        t_send_ms="t",
        outcome="outcome",
        status="200",
        regenerate_of="CASE WHEN g % 50 = 0 AND (g - 1) % 5 > 0 "
        "THEN left(md5('b' || (g - 1)), 16) ELSE '' END",
        client_ttft_ms="620",
        server_ttft_ms="520",
        model_ttft_ms="450",
        output_tokens="30",
        model="model",
        model_calls="1",
    )
    # Each conversation's span of send times, as the stitch writes it with its turns.
    _fill(
        Conversation,
        f"(SELECT app, s, min(t) AS first, max(t) AS last FROM {done} GROUP BY app, s) AS c",
        app_id="app",
        conversation_id="'conv-' || s",
        first_send_ms="first",
        last_send_ms="last",
    )
    _fill(
        Score,
        f"{done} AND g % 5 = 0",
        app_id="app",
        trace_id="tid",
        name="'hallucination'",
        value="(g % 100) / 100.0",
        received_at="to_timestamp((t + 60000) / 1000)",
    )
    # A month of server-only traces of the middle application before that: a trace
    # table of realistic size. Below some 10,000 traces of an application the planner
    # may sort them all for the trace list rather than walk the index, which costs
    # nothing at that size; at this one it must walk.
    _fill(
        Trace,
        "generate_series(1, 80000) AS g",
        app_id=str(b),
        trace_id="md5('old' || g)",
        start_ms=f"{store.start_ms} - 30 * {DAY_MS}::float8 + g * 30000.0",
        end_ms=f"{store.start_ms} - 30 * {DAY_MS}::float8 + g * 30000.0 + 900",
        span_count="1",
        last_received_at="now() - interval '30 days'",
        stitched_at="now() - interval '30 days'",
    )
    # And its sessions of that month: below some 10,000 sessions of an application the
    # planner would sort them all for the sessions index rather than walk its index.
    _fill(
        BrowserSession,
        "generate_series(1, 80000) AS g",
        app_id=str(b),
        session_id="'old-' || g",
        first_seen_at=f"to_timestamp(({store.start_ms} - 30 * {DAY_MS}::float8 + g * 30000.0) / 1000)",
        last_seen_at=f"to_timestamp(({store.start_ms} - 30 * {DAY_MS}::float8 + g * 30000.0) / 1000)",
        user_agent=_literal(factories.CHROME_UA),
    )
    # Server-only traces (no beacon): spans only, half of them in the backlog.
    _fill(
        Span,
        "generate_series(1, 400) AS g",
        app_id=str(a),
        trace_id="md5('so' || g)",
        span_id="left(md5('so' || g), 16)",
        role="'service'",
        service="'chat-gateway'",
        name="'POST /api/chat'",
        start_ns=f"(({store.turn_ms(stitched)} + g * 1000) * 1000000)::bigint",
        end_ns=f"(({store.turn_ms(stitched)} + g * 1000 + 900) * 1000000)::bigint",
        received_at="now()",
    )
    _fill(
        DirtyTrace,
        f"(SELECT app, tid FROM {turns} WHERE g > {stitched} UNION ALL "
        f"SELECT {a}, md5('so' || g) FROM generate_series(1, 200) AS g) AS d",
        app_id="app",
        trace_id="tid",
        first_marked_at="now() - interval '1 hour'",
        last_marked_at="now() - interval '1 hour'",
    )
    # Rollups: every minute of the stitched turns (all, and by model) per application,
    # their hours by every dimension, their days.
    minutes = (
        f"generate_series(date_trunc('minute', to_timestamp({store.start_ms} / 1000)), "
        f"to_timestamp({store.turn_ms(stitched)} / 1000), interval '1 minute') AS m "
        f"CROSS JOIN unnest(ARRAY[{a}, {b}, {c}]) AS app"
    )
    _fill(
        Rollup,
        f"{minutes} CROSS JOIN unnest(ARRAY['', 'model']) AS d",
        app_id="app",
        period="'minute'",
        dimension="d",
        start="m",
        key="CASE d WHEN '' THEN '' ELSE 'llama-3.1-8b' END",
        turns="1",
        computed_at="now()",
    )
    # Each row counts the minutes it covers, so a window's turn count (which picks
    # exact or rollups) is the same whatever the time of day the test runs at.
    for period, dims, turns in (
        ("hour", "'', 'model', 'browser', 'os', 'device'", 60),
        ("day", "'', 'model'", 1440),
    ):
        _fill(
            Rollup,
            f"(SELECT DISTINCT date_trunc('{period}', m) AS p, app FROM {minutes}) AS x "
            f"CROSS JOIN unnest(ARRAY[{dims}]) AS d",
            app_id="app",
            period=f"'{period}'",
            dimension="d",
            start="p",
            key="''",
            turns=str(turns),
            computed_at="now()",
        )
    # Minutes the sweep marked and a later sweep rebuilds: the last ten hours stitched.
    _fill(
        DirtyRollup,
        f"generate_series(date_trunc('minute', to_timestamp({store.turn_ms(stitched)} / 1000))"
        " - interval '10 hours', to_timestamp("
        f"{store.turn_ms(stitched)} / 1000), interval '1 minute') AS m "
        f"CROSS JOIN unnest(ARRAY[{a}, {b}, {c}]) AS app",
        app_id="app",
        period="'minute'",
        start="m",
        first_marked_at="now() - interval '1 hour'",
        last_marked_at="now() - interval '1 hour'",
    )


def _index_columns() -> dict[str, tuple[str, list[str]]]:
    """index name -> (its table, its key columns in order)."""
    with connection.cursor() as cursor:
        cursor.execute(
            """SELECT i.relname, t.relname, array_agg(a.attname ORDER BY k.n)
               FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               JOIN pg_class t ON t.oid = x.indrelid
               JOIN pg_namespace s ON s.oid = t.relnamespace AND s.nspname = current_schema()
               CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, n)
               JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
               WHERE k.n <= x.indnkeyatts
               GROUP BY 1, 2"""
        )
        return {index: (table, list(columns)) for index, table, columns in cursor.fetchall()}


@pytest.fixture(scope="module")
def store(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Store]:
    with django_db_blocker.unblock(), transaction.atomic():
        # Events, spans and turns are day partitions (rumserver.partitions). Loaded
        # into days, today's would hold the hours since midnight only, so the plans
        # (chosen by each partition's size) would change with the time of day the
        # test runs at: everything goes to the default partition instead, one big
        # partition as each day's is in a deployment. Pruning by time is checked in
        # tests/correlator/test_partitions.py.
        partitions_drop_before(datetime.now(UTC).date() + timedelta(days=3_650))
        _forget_statistics(_llmrum_tables())
        created = [factories.make_app(name) for name in ("Big", "Middle", "Small")]
        staff = User.objects.create_user("plans", password="pw", is_staff=True)
        now = timezone.now()
        store = Store(
            apps=created, staff=staff, now=now,
            start_ms=now.timestamp() * 1000 - 3 * DAY_MS - 3_600_000,
        )  # fmt: skip
        _load(store)
        with connection.cursor() as cursor:
            for table in _llmrum_tables():
                cursor.execute(f"SELECT count(*) FROM {table}")
                store.rows[table] = cursor.fetchone()[0]
        store.indexes = _index_columns()
        yield store
        transaction.set_rollback(True)


# --- recording what a path sends ---------------------------------------------------------


@dataclass
class Statement:
    sender: str  # the llmrum function that sent it, e.g. "correlator.stitch.load._pg_turns"
    sql: str
    params: Any
    prepared: bool  # by rumserver.sql: server-side parameters, a generic plan in time


_OWN = (str(ROOT / "correlator"), str(ROOT / "rumserver"))


def _sender() -> str:
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_OWN) and not path.endswith("rumserver/sql.py"):
            module = Path(path).relative_to(ROOT).with_suffix("").as_posix().replace("/", ".")
            return f"{module}.{frame.f_code.co_name}"
        frame = frame.f_back
    return "?"


@contextmanager
def recorded() -> Iterator[list[Statement]]:
    """Every statement sent meanwhile: Django's cursors (``execute_wrapper``) and
    ``rumserver.sql``'s prepared ones (wrapped where each module imported them)."""
    statements: list[Statement] = []

    def django_wrapper(execute: Callable, sql_: str, params: Any, many: bool, ctx: Any) -> Any:
        statements.append(Statement(_sender(), sql_, params, prepared=False))
        return execute(sql_, params, many, ctx)

    def prepared(original: Callable) -> Callable:
        def wrapper(sql_: str, params: dict[str, Any]) -> Any:
            statements.append(Statement(_sender(), sql_, params, prepared=True))
            return original(sql_, params)

        return wrapper

    patches = [
        mock.patch.object(module, name, prepared(getattr(llmrum_sql, name)))
        for module in list(sys.modules.values())
        if getattr(module, "__name__", "").startswith(("correlator.", "rumserver."))
        for name in ("execute_prepared", "fetch_prepared")
        if getattr(module, name, None) is getattr(llmrum_sql, name) and module is not llmrum_sql
    ]
    with connection.execute_wrapper(django_wrapper):
        for patch in patches:
            patch.start()
        try:
            yield statements
        finally:
            for patch in patches:
                patch.stop()


# --- planning them -----------------------------------------------------------------------

_PLANNED = re.compile(r"^\s*(WITH|SELECT|INSERT|UPDATE|DELETE)\b", re.IGNORECASE)
_PSYCOPG_PARAM = re.compile(r"%\((\w+)\)s|%s|%%")


def _plans(statement: Statement) -> Iterator[tuple[str, dict[str, Any]]]:
    """(mode, the root plan node): Django's statements as they were sent (their values
    inline: a custom plan); the prepared ones as a custom and as a generic plan."""
    if not statement.prepared:
        with connection.cursor() as cursor:
            cursor.execute("EXPLAIN (FORMAT JSON) " + statement.sql, statement.params)
            yield "custom", _root(cursor.fetchone()[0])
        return
    order: list[str] = []

    def numbered(match: re.Match) -> str:
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        assert name, "rumserver.sql statements name their parameters"
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    text = _PSYCOPG_PARAM.sub(numbered, statement.sql)
    values = ", ".join(_literal(statement.params[name]) for name in order)
    with psycopg.Cursor(connection.connection) as cursor:
        cursor.execute(f"PREPARE llmrum_plan AS {text}")
        try:
            for mode in ("custom", "generic"):
                cursor.execute(f"SET LOCAL plan_cache_mode = force_{mode}_plan")
                cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE llmrum_plan({values})")
                yield mode, _root(cursor.fetchone()[0])
        finally:
            cursor.execute("RESET plan_cache_mode")
            cursor.execute("DEALLOCATE llmrum_plan")


def _root(explained: Any) -> dict[str, Any]:
    return (json.loads(explained) if isinstance(explained, str) else explained)[0]["Plan"]


# Nodes that read all their input before giving a row: a LIMIT above them does not stop
# the scans below. A Bitmap Index Scan is one too: it reads every entry it matches
# before the heap scan above it returns a row.
_BLOCKING = {"Sort", "Hash", "SetOp", "Bitmap Index Scan"}
_INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Index Scan"}


def _constrained(cond: str, columns: list[str]) -> list[str]:
    """The index's columns that its Index Cond bounds (the indexed side is unqualified
    there; the other side's columns carry their alias: ``k.app_id``)."""
    return [c for c in columns if re.search(rf"(?<![\w.]){c}\b", cond)]


def _many_keys(node: dict[str, Any], store: Store) -> bool:
    """A scan for a list of primary keys that the planner expects to be a tenth of the
    table or more (the sweep deleting the batch it claimed from a backlog of a few
    batches): its estimate comes from the key being unique, not from statistics, and
    reading the table is then what an index would cost."""
    keys = re.fullmatch(r"\(id = ANY \(.*\)\)", node.get("Filter", ""))
    return bool(keys) and node["Plan Rows"] >= 0.1 * store.rows[node["Relation Name"]]


def plan_problems(node: dict[str, Any], store: Store, limited: bool = False) -> list[str]:
    """What in this plan reads a whole big table or a whole application's rows.
    ``limited``: a LIMIT above stops this node early (no blocking node in between)."""
    kind = node["Node Type"]
    if kind == "Limit":
        limited = True
    elif kind in _BLOCKING or (kind == "Aggregate" and node.get("Strategy") != "Sorted"):
        limited = False
    problems = []
    table = node.get("Relation Name")
    # The system catalogs' (a path asking which day partitions there are) are small.
    if kind in _INDEX_SCANS and not node["Index Name"].startswith("pg_"):
        table, columns = store.indexes[node["Index Name"]]
        bounded = _constrained(node.get("Index Cond", ""), columns)
        if store.rows.get(table, 0) >= BIG and set(bounded) <= {"app_id"} and not limited:
            what = "every row of an application" if bounded else "the whole index"
            problems.append(
                f"{kind} on {table} by {node['Index Name']} ({', '.join(columns)}) bounded "
                f"only by {node.get('Index Cond', 'nothing')}: reads {what}"
            )
    elif kind == "Seq Scan" and store.rows.get(table, 0) >= BIG and not _many_keys(node, store):
        problems.append(
            f"Seq Scan on {table} ({store.rows[table]:,} rows), filter {node.get('Filter', 'none')}"
        )
    for child in node.get("Plans", []):
        # An inner side runs once per outer row (or whole), a subplan on its own: a
        # LIMIT above does not stop them.
        relation = child.get("Parent Relationship")
        problems += plan_problems(
            child, store, limited and relation not in ("Inner", "InitPlan", "SubPlan")
        )
    return problems


def _short(text: str) -> str:
    """An array literal of many keys as its first two and a count."""

    def cut(match: re.Match) -> str:
        items = match.group(1).split(",")
        return "'{" + ",".join(items[:2]) + f",… {len(items)} items}}'"

    return re.sub(r"'\{([^'}]{80,})\}'", cut, text)


def plan_outline(node: dict[str, Any], depth: int = 0) -> list[str]:
    """The plan's nodes, one a line, for the failure message."""
    parts = [node["Node Type"]]
    if "Relation Name" in node:
        parts.append(f"on {node['Relation Name']}")
    if "Index Name" in node:
        parts.append(f"using {node['Index Name']}")
    for key in ("Index Cond", "Filter", "Hash Cond", "Join Filter"):
        if key in node:
            parts.append(f"{key}: {node[key]}")
    lines = ["  " * depth + _short(" ".join(parts))]
    for child in node.get("Plans", []):
        lines += plan_outline(child, depth + 1)
    return lines


def _shape(sql_: str) -> str:
    """One key for a statement whatever the length of its IN lists."""
    return re.sub(r"%s(, %s)+", "%s…", sql_)


def check(statements: list[Statement], store: Store, expected: set[str]) -> None:
    """EXPLAIN each distinct statement (the one with the most parameters) and fail
    with every problem found, and on an expected sender that sent nothing."""
    distinct: dict[str, Statement] = {}
    for statement in statements:
        if not _PLANNED.match(statement.sql):
            continue
        key = _shape(statement.sql)
        seen = distinct.get(key)
        if seen is None or len(str(statement.params)) > len(str(seen.params)):
            distinct[key] = statement
    senders = {s.sender for s in distinct.values()}
    missing = expected - senders
    failures = []
    for statement in distinct.values():
        for mode, root in _plans(statement):
            problems = plan_problems(root, store)
            if problems:
                failures.append(
                    f"{statement.sender} ({mode} plan):\n    "
                    + "\n    ".join(_short(p) for p in problems)
                    + "\n  SQL: "
                    + " ".join(_shape(statement.sql).split())[:600]
                    + "\n  plan:\n    "
                    + "\n    ".join(plan_outline(root))
                )
    assert not missing, f"expected statements not sent (moved? renamed?): {sorted(missing)}"
    assert not failures, "plans that need statistics:\n" + "\n".join(failures)


# --- the paths ------------------------------------------------------------------------------


def _ingest_beacon(store: Store) -> None:
    golden = GoldenTurn(t0=time.time() * 1000 - 5_000, server_timing=True, session="sess-1")
    key = store.apps[0].application.public_key
    send_beacon(Client(), key, golden.beacon())
    # A batch with a vital sends the statement that also looks for its earlier value
    # (rumserver.ingest.beacon.store): reported again, at a new time.
    vital = {
        "type": "vital", "id": "v1-plans", "ts": time.time() * 1000 - 4_000, "name": "CLS",
        "value": 0.05, "delta": 0.05, "rating": "good", "navigation_type": "navigate",
    }  # fmt: skip
    send_beacon(Client(), key, factories.batch([vital]))
    send_beacon(Client(), key, factories.batch([{**vital, "ts": vital["ts"] + 1_000}]))


def _ingest_otlp(store: Store) -> None:
    # A trace of the backlog: its turn event is stored (ingest reads nothing of it).
    client, token = Client(), store.apps[0].ingest_token
    golden = GoldenTurn(t0=time.time() * 1000 - 5_000, trace_id=_backlog_trace(store))
    send_otlp(client, token, golden.gateway_request())
    send_otlp(client, token, golden.model_request())


def _backlog_trace(store: Store) -> str:
    app = store.apps[0].application.pk
    return (
        DirtyTrace.objects.filter(app_id=app)
        .order_by("id")
        .values_list("trace_id", flat=True)
        .first()
    )


def _ingest_score(store: Store) -> None:
    response = Client().post(
        "/api/v1/scores",
        {"trace_id": _backlog_trace(store), "name": "hallucination", "value": 0.25},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {store.apps[0].ingest_token}",
    )
    assert response.status_code == 201, response.content


MOVED = 30  # stitched traces made dirty again with their stored start a second earlier


def _sweep(store: Store) -> None:
    # Stitched before at another time (another clock skew): each one's turn and browser
    # span are written at the new time and their rows at the old go
    # (correlator.stitch.store._moved_delete). Turns 1-30: the first application's.
    app = store.apps[0].application.pk
    moved = [_md5(f"t{g}") for g in range(1, MOVED + 1)]
    now = timezone.now()
    Trace.objects.filter(app_id=app, trace_id__in=moved).update(start_ms=F("start_ms") - 1000)
    DirtyTrace.objects.bulk_create(
        [DirtyTrace(app_id=app, trace_id=t, first_marked_at=now, last_marked_at=now)
         for t in moved],
        ignore_conflicts=True,
    )  # fmt: skip
    result = sweep_run(now=timezone.now(), threads=1)
    assert result.stitched >= BACKLOG + MOVED and result.rollups > 0, result


def _api_get(store: Store, path: str, **query: Any) -> dict[str, Any]:
    client = Client()
    client.force_login(store.staff)
    response = client.get(path, query)
    assert response.status_code == 200, response.content
    return response.json()


def _api_traces(store: Store) -> None:
    slug = store.apps[0].application.slug
    page = _api_get(store, "/api/v1/traces", app=slug)
    assert page["results"], page
    _api_get(store, page["next"])  # the second page, from the cursor
    since = datetime.fromtimestamp(store.turn_ms(TURNS // 2) / 1000, UTC)
    _api_get(store, "/api/v1/traces", app=slug, since=since.isoformat(),
             until=(since + timedelta(hours=1)).isoformat())  # fmt: skip
    _api_get(store, f"/api/v1/traces/{page['results'][0]['trace_id']}")


def _api_metrics(store: Store) -> None:
    slug = store.apps[0].application.slug
    until = datetime.fromtimestamp(store.turn_ms(TURNS - BACKLOG) / 1000, UTC)
    hour = {"app": slug, "since": (until - timedelta(hours=1)).isoformat(),
            "until": until.isoformat()}  # fmt: skip
    days = {**hour, "since": (until - timedelta(days=3)).isoformat()}
    assert _api_get(store, "/api/v1/metrics", **hour)["turns"] > 0
    assert _api_get(store, "/api/v1/metrics", **days)["turns"] > 2_000
    for query in (hour, days):
        _api_get(store, "/api/v1/metrics", **query, group_by="model")
        _api_get(store, "/api/v1/metrics", **query, group_by="device")


def _rum_metrics(store: Store) -> None:
    """The RUM figures of ``GET /metrics``: every day row by model, of every application."""
    assert len(rum_series()) == len(store.apps)


def _api_trace_search(store: Store) -> None:
    """The trace list searched by each kind of id, by a span attribute, by a score."""
    slug = store.apps[0].application.slug
    newest = _api_get(store, "/api/v1/traces", app=slug)["results"][0]
    g = 6  # session 1 of the biggest application (sessions s % 10 < 6), turns 6 to 10
    searches = [
        newest["trace_id"],
        "sess-1",
        "conv-1",
        "user-1",
        "nobody",
    ]
    for q in searches:
        found = _api_get(store, "/api/v1/traces", app=slug, q=q)["results"]
        assert found or q == "nobody", q
    found = _api_get(store, "/api/v1/traces", app=slug, attr=f"app.request_id:req-{g}")
    assert [t["trace_id"] for t in found["results"]] == [_md5(f"t{g}")]
    _api_get(store, "/api/v1/traces", app=slug, attr="gen_ai.usage.input_tokens:812")
    _api_get(store, "/api/v1/traces", app=slug, score="hallucination")


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _sessions_page(store: Store) -> None:
    client = Client()
    client.force_login(store.staff)
    slug = store.apps[0].application.slug
    first = client.get("/reports/sessions/", {"app": slug})
    assert first.status_code == 200 and b"data-session=" in first.content
    cursor = re.search(rb'rel="next" href="\?([^"]+)"', first.content)
    assert cursor, "a second page"
    second = client.get("/reports/sessions/?" + cursor.group(1).decode().replace("&amp;", "&"))
    assert second.status_code == 200


def _report_pages(store: Store) -> None:
    client = Client()
    client.force_login(store.staff)
    slug = store.apps[0].application.slug
    # A day that starts and ends inside a minute: its edges read raw reports; and the
    # last three hours' minutes waiting for a rebuild, read raw with their sessions.
    marked = store.now.replace(second=0, microsecond=0)
    DirtyEventRollup.objects.bulk_create(
        DirtyEventRollup(app=store.apps[0].application, period="minute", start=marked - timedelta(minutes=m),
                         first_marked_at=store.now, last_marked_at=store.now)
        for m in range(180)
    )  # fmt: skip
    since = store.now - timedelta(days=1, seconds=-17)
    edges = {"since": since.isoformat(), "until": (store.now - timedelta(seconds=9)).isoformat()}
    for page in ("/reports/vitals/", "/reports/errors/"):
        for query in ({"range": "1h"}, {"range": "7d"}, edges):
            response = client.get(page, {"app": slug, **query})
            assert response.status_code == 200, response.content


def _trace_page_by_attribute(store: Store) -> None:
    """The trace list page searched by a span attribute, from the newest day
    partitions on: one trace's response id, and one all traces carry (two pages)."""
    client = Client()
    client.force_login(store.staff)
    slug = store.apps[0].application.slug
    g = 6
    one = client.get("/reports/traces", {"app": slug, "attr": f"app.request_id:req-{g}"})
    assert re.findall(rb'<tr data-trace="([0-9a-f]{32})">', one.content) == [_md5(f"t{g}").encode()]
    first = client.get("/reports/traces", {"app": slug, "attr": "gen_ai.usage.input_tokens:812"})
    cursor = re.search(rb'rel="next" href="\?([^"]+)"', first.content)
    assert first.status_code == 200 and cursor, "a second page"
    second = client.get("/reports/traces?" + cursor.group(1).decode().replace("&amp;", "&"))
    assert second.status_code == 200 and b"data-trace=" in second.content


def _api_traces_filtered(store: Store) -> None:
    """The trace list filtered by its turn and the turn's session, over a day."""
    slug = store.apps[0].application.slug
    since = datetime.fromtimestamp(store.turn_ms(TURNS // 2) / 1000, UTC)
    window = {"app": slug, "since": since.isoformat(),
              "until": (since + timedelta(days=1)).isoformat()}  # fmt: skip
    for query in ({"outcome": "error"}, {"model": "gpt-4o-mini"}, {"browser": "Safari"},
                  {"device": "mobile", "min_client_ttft_ms": 600}):  # fmt: skip
        assert _api_get(store, "/api/v1/traces", **window, **query)["results"], query


def _trace_pages(store: Store) -> None:
    """The trace list page and the newest trace's page (its turn)."""
    client = Client()
    client.force_login(store.staff)
    slug = store.apps[0].application.slug
    listed = client.get("/reports/traces", {"app": slug})
    assert listed.status_code == 200
    newest = re.findall(rb'<tr data-trace="([0-9a-f]{32})">', listed.content)[0].decode()
    page = client.get(f"/reports/traces/{newest}", {"app": slug})
    assert page.status_code == 200 and page.context["turn"] is not None


def _turn_pages(store: Store) -> None:
    """A trace's page with the turns it regenerates and that regenerate it, and a
    session's page (its turns with their traces): by span id and by session, turns
    of any day (each day partition's index probed)."""
    client = Client()
    client.force_login(store.staff)
    small = store.apps[2].application.slug  # turn 50 regenerates turn 49: session 9's
    for trace_id in (_md5("t49"), _md5("t50")):
        page = client.get(f"/reports/traces/{trace_id}", {"app": small})
        assert page.status_code == 200 and page.context["turn"] is not None, trace_id
    assert page.context["regenerates"] == _md5("t49"), page.context["regenerates"]
    session = client.get("/reports/sessions/sess-1", {"app": store.apps[0].application.slug})
    assert session.status_code == 200 and session.content.count(b'<tr class="turn"') == 5


# path -> (run it, the senders it must have sent statements from)
PATHS: dict[str, tuple[Callable[[Store], None], set[str]]] = {
    "ingest: POST /rum/v1/beacon": (
        _ingest_beacon,
        {"rumserver.ingest.beacon.store._store_postgres"},
    ),
    "ingest: POST /v1/traces": (
        _ingest_otlp,
        {"rumserver.ingest.otlp.store.store_spans"},
    ),
    "ingest: POST /api/v1/scores": (
        _ingest_score,
        {"rumserver.ingest.scores.score_record", "rumserver.ingest.dirty.mark_dirty"},
    ),
    "sweep: stitch the backlog, rebuild rollups, finalize": (
        _sweep,
        {
            "correlator.stitch.sweep._sweep_batch",
            "correlator.stitch.load._bounds",
            "correlator.stitch.load._pg_spans",
            "correlator.stitch.load._pg_turns",
            "correlator.stitch.load._pg_samples",
            "correlator.selectors.regenerated_span_ids",
            "correlator.stitch.store.write_stitched",
            "correlator.stitch.store._moved_delete",
            "correlator.stitch.store.restitches_queue",
            "correlator.analytics.rollups._refresh_batch",
            "correlator.analytics.rollups.turn_facts",
            "correlator.analytics.rollups.server_only_facts",
            "correlator.analytics.rollups.periods_rebuild",
            "correlator.analytics.rollups.insert_rows",
            "correlator.analytics.rollups.rollups_mark",
            "correlator.selectors.conversation_openers",
            "correlator.selectors.feedback_events",
            "correlator.selectors.hallucination_scores",
            "correlator.stitch.sweep.sweep_run",
        },
    ),
    "read API: GET /api/v1/traces, /api/v1/traces/<id>": (
        _api_traces,
        {"correlator.selectors.trace_detail", "correlator.selectors.trace_spans"},
    ),
    "read API: GET /api/v1/metrics": (
        _api_metrics,
        {
            "correlator.analytics.windows.window_turn_count",
            "correlator.analytics.windows.stale_periods",
            "correlator.analytics.rollups.read_rows",
            "correlator.analytics.exact.window_turns",
        },
    ),
    "GET /metrics: the RUM histograms and turn counters": (
        _rum_metrics,
        {"correlator.rum_metrics.rum_series", "correlator.rum_metrics._convert_stale"},
    ),
    "read API: GET /api/v1/traces filtered by the turn, its session": (
        _api_traces_filtered,
        {"correlator.api.get", "correlator.selectors.with_turns"},
    ),
    "report pages: /reports/traces, a trace": (
        _trace_pages,
        {"correlator.selectors.with_turns", "correlator.selectors.trace_detail"},
    ),
    "report pages: a regenerated trace, a session": (
        _turn_pages,
        {
            "correlator.selectors.regeneration_links",
            "correlator.reports.pages.session.session_view",
        },
    ),
    "read API: GET /api/v1/traces?q=, attr=, score=": (
        _api_trace_search,
        {"correlator.selectors._searched", "correlator.api.get"},
    ),
    "report pages: /reports/traces?attr=": (
        _trace_page_by_attribute,
        {
            "correlator.selectors._attribute_traces",
            "correlator.selectors._trace_pks",
            "correlator.selectors._newest_with_attribute",
        },
    ),
    "report pages: /reports/sessions/": (
        _sessions_page,
        {"correlator.selectors.session_list", "correlator.selectors.session_counts"},
    ),
    "report pages: /reports/vitals/, /reports/errors/": (
        _report_pages,
        {
            "correlator.analytics.windows.stale_periods",
            "correlator.analytics.event_rollups._stored",
            "correlator.analytics.event_rollups.event_facts",
            "correlator.analytics.event_rollups.session_values",
        },
    ),
}


def test_the_tables_have_no_statistics(store: Store) -> None:
    """The premise: big tables, and nothing the planner could know them by but their
    size (no ANALYZE ran on them since they were emptied of statistics)."""
    tables = _llmrum_tables()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT relname, coalesce(last_analyze, last_autoanalyze) FROM pg_stat_user_tables "
            "WHERE relname = ANY(%s) AND coalesce(last_analyze, last_autoanalyze) > %s",
            [tables, store.now],
        )
        assert cursor.fetchall() == [], "analysed while the test ran"
        cursor.execute(
            "SELECT tablename, count(*) FROM pg_stats WHERE schemaname = current_schema() "
            "AND tablename = ANY(%s) GROUP BY 1",
            [tables],
        )
        assert cursor.fetchall() == []
        cursor.execute(
            "SELECT relname, reltuples FROM pg_class WHERE oid = ANY(%s::regclass[]) "
            "AND reltuples >= 0",
            [tables],
        )
        assert cursor.fetchall() == []
        cursor.execute(
            "SELECT relname FROM pg_class WHERE oid = ANY(%s::regclass[]) AND "
            "NOT coalesce('autovacuum_enabled=false' = ANY(reloptions), false)",
            [_leaf_tables(tables)],
        )
        assert cursor.fetchall() == []
    big = {t for t, n in store.rows.items() if n >= BIG}
    assert big >= {"rumserver_browserevent", "rumserver_span", "correlator_turn"}
    assert store.rows["rumserver_browserevent"] > 25_000 and store.rows["rumserver_span"] > 70_000


def test_connections_plan_without_jit(store: Store) -> None:
    """Costs estimated without statistics are large enough for JIT to compile a stitch
    batch's reads (0.4 s each): llmrum's connections turn it off (rumserver.sql)."""
    with connection.cursor() as cursor:
        cursor.execute("SHOW jit")
        assert cursor.fetchone()[0] == "off"


@pytest.mark.parametrize("path", list(PATHS))
def test_hot_path_plans_hold_without_statistics(store: Store, path: str) -> None:
    run, expected = PATHS[path]
    with recorded() as statements:
        run(store)
    check(statements, store, expected)


def test_the_check_sees_a_whole_application_scan(store: Store) -> None:
    """The check itself: a lookup by trace id through an index led by app_id alone
    (what the planner picked for the turn read before), and a sequential scan."""
    app = store.apps[0].application.pk
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_bitmapscan = off")
        statement = Statement(
            "test", "SELECT * FROM rumserver_browserevent WHERE app_id = %s AND type = 'turn' "
            "AND trace_id = %s", [app, "x"], False,
        )  # fmt: skip
        # Without the (trace_id) index the planner must pick another: hide it.
        cursor.execute("DROP INDEX event_trace")
        (_, root), *_ = _plans(statement)
        assert any("every row of an application" in p for p in plan_problems(root, store)), (
            plan_outline(root)
        )
        cursor.execute("SET LOCAL enable_seqscan = on")
        cursor.execute("SET LOCAL enable_indexscan = off")
        (_, root), *_ = _plans(Statement("test", "SELECT * FROM rumserver_span", None, False))
        # One a big day partition of spans (rumserver.partitions).
        assert sorted(plan_problems(root, store)) == sorted(
            f"Seq Scan on {table} ({rows:,} rows), filter none"
            for table, rows in store.rows.items()
            if table.startswith("rumserver_span_") and rows >= BIG
        )


TURN_PATHS = ["read API: GET /api/v1/traces, /api/v1/traces/<id>",
              "read API: GET /api/v1/traces filtered by the turn, its session",
              "report pages: /reports/traces, a trace"]  # fmt: skip


def _turn_partitions_read() -> dict[str, int]:
    """Scans (sequential and index) of each partition of turns in this transaction."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables "
            "WHERE relname LIKE 'correlator_turn_%%'"
        )
        return dict(cursor.fetchall())


def test_turn_reads_touch_their_partitions_only(store: Store) -> None:
    """A month of day partitions of turns made ahead (empty and never analysed, as beat
    makes them), the turns where they are (the default partition): the trace list, its
    filters, the trace and its pages read the partition of each trace's turn only,
    pruned at run time by the trace's start; a read by trace id alone would scan or
    probe every one of them. Rolled back after."""
    today = datetime.now(UTC).date()
    with transaction.atomic():
        made = partitions_ensure([today + timedelta(days=d) for d in range(2, 32)])
        assert len([m for m in made if m.startswith("correlator_turn_p")]) == 30
        for path in TURN_PATHS:
            before = _turn_partitions_read()
            PATHS[path][0](store)
            after = _turn_partitions_read()
            read = {name for name, n in after.items() if n > before.get(name, 0)}
            assert read <= {"correlator_turn_default"}, (path, sorted(read))
        transaction.set_rollback(True)


def test_conversation_openers_touch_their_partitions_only(store: Store) -> None:
    """A month of day partitions of turns before the store's days, as a deployment
    has them, and the store's turns in the default partition: a conversation's opening
    turns (first-response accuracy: the rollups, and the minute the stitch marks where
    a conversation began) are read from the partitions within the send times the
    conversation spans (correlator.models.Conversation), pruned as each probe runs;
    by the (app, conversation) index alone each probe descended every day's index.
    The answer is the plain read's. Rolled back after."""
    today = datetime.now(UTC).date()
    app_id = store.apps[0].application.pk
    rows = Turn.objects.filter(app_id=app_id).order_by("conversation_id", "t_send_ms", "span_id")
    expected: dict[str, list[str]] = {}
    for conversation, span_id in rows.values_list("conversation_id", "span_id"):
        if len(expected.setdefault(conversation, [])) < 2:
            expected[conversation].append(span_id)
    with transaction.atomic():
        # From a week back: the store starts 3 days and an hour before now, and the
        # sweep's reads reach about a day before a trace's times (the window's slack for
        # clock skew, a regenerated turn's look), so from 00:00 to about 02:00 UTC they
        # reach into the day five days back.
        made = partitions_ensure([today - timedelta(days=d) for d in range(7, 37)])
        assert len([m for m in made if m.startswith("correlator_turn_p")]) == 30
        before = _turn_partitions_read()
        openers = selectors.conversation_openers(app_id=app_id, conversations=list(expected))
        after = _turn_partitions_read()
        read = {name for name, n in after.items() if n > before.get(name, 0)}
        assert read == {"correlator_turn_default"}, sorted(read)
        assert {c: [row.span_id for row in found] for c, found in openers.items()} == expected
        # The sweep: stitching the backlog, then rebuilding its minutes' rollups.
        before = _turn_partitions_read()
        _sweep(store)
        after = _turn_partitions_read()
        read = {name for name, n in after.items() if n > before.get(name, 0)}
        assert read <= {"correlator_turn_default"}, sorted(read)
        transaction.set_rollback(True)
