"""Writing a stitched batch: traces (with the roles the stitch decided), their
turns and browser spans, and the rollup minutes they touch, all in the caller's
transaction.

On PostgreSQL one hand-written statement does it (data-modifying CTEs, rows as
jsonb documents, as ingest does): Django's bulk_create sends every column as an
array that psycopg converts item by item in Python, and bulk_update builds a
CASE per row, which together were half of a worker's CPU in bench/stitch.
Elsewhere (SQLite, the embedded default) the ORM writes the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any

from django.db import connection, transaction
from django.db.models import Model

from correlator import selectors
from correlator.analytics.rollups import MINUTE, minute_of, rollups_mark
from correlator.bulk import columns_of, encode_json, record_of, recordset_of
from correlator.models import Conversation, DirtyRollup, Restitch, Rollup, Trace, Turn
from correlator.stitch.rules import WINDOW_SLACK_MS
from rumserver.ingest.dirty import upsert_sql
from rumserver.models import BrowserEvent, Span
from rumserver.sql import execute_prepared

TRACE_UPDATE = [
    "state",
    "linked",
    "clock_skew_ms",
    "skew_source",
    "clock_skew_uncertainty_ms",
    "start_ms",
    "end_ms",
    "span_count",
    "propagation",
    "propagation_cause",
    "last_received_at",
    "stitched_at",
    "roles",
]
TURN_UPDATE = [f.name for f in Turn._meta.concrete_fields if f.name not in ("id", "app", "trace")]
BROWSER_SPAN_UPDATE = ["name", "start_ns", "end_ns", "status_code", "attributes", "received_at"]


def _set(model: type[Model], names: list[str]) -> str:
    column_of = {f.name: f.column for f in model._meta.concrete_fields}
    columns = [column_of[n] for n in names]
    return ", ".join(f"{c} = excluded.{c}" for c in columns)


@cache
def _postgres_sql() -> str:
    trace_cols = columns_of(Trace)
    turn_cols = columns_of(Turn, skip=("id", "trace_id"))
    span_cols = columns_of(Span)
    trace_names = ", ".join(f.column for f in trace_cols)
    turn_names = ", ".join(f.column for f in turn_cols)
    span_names = ", ".join(f.column for f in span_cols)
    return f"""
WITH t AS (
    INSERT INTO {Trace._meta.db_table} ({trace_names})
    SELECT {", ".join(f"r.{f.column}" for f in trace_cols)}
    FROM jsonb_to_recordset(%(traces)s::jsonb) AS r({recordset_of(trace_cols)})
    ORDER BY r.app_id, r.trace_id
    ON CONFLICT (app_id, trace_id) DO UPDATE SET {_set(Trace, TRACE_UPDATE)}
    RETURNING id, app_id, trace_id
), u AS (
    INSERT INTO {Turn._meta.db_table} (trace_id, {turn_names})
    SELECT t.id, {", ".join(f"r.{f.column}" for f in turn_cols)}
    FROM jsonb_to_recordset(%(turns)s::jsonb) AS r({recordset_of(turn_cols, "trace_key text")})
    JOIN t ON t.app_id = r.app_id AND t.trace_id = r.trace_key
    ORDER BY t.id
    ON CONFLICT (trace_id, t_send_ms) DO UPDATE SET {_set(Turn, TURN_UPDATE)}
), stale_turns AS (
    -- Turns are day partitions by t_send_ms (rumserver.partitions), which ends their
    -- unique key: a turn stitched again at another send time (another clock skew) is
    -- inserted above at its new time, and its row at the old time goes here, in this
    -- statement, under the trace's row lock (upserted above): one turn a trace. The
    -- old row was written with its trace's start (correlator.models.TraceOfTurn), so
    -- only a trace whose stored start differs from its turn's new send time probes
    -- its turns, within the stored trace's time and the browser-clock slack.
    SELECT f.id, f.t_send_ms
    FROM jsonb_to_recordset(%(turns)s::jsonb) AS r(app_id bigint, trace_key text,
                                                   t_send_ms double precision)
    CROSS JOIN LATERAL (
        SELECT id, start_ms, end_ms FROM {Trace._meta.db_table}
        WHERE app_id = r.app_id AND trace_id = r.trace_key AND start_ms <> r.t_send_ms
        OFFSET 0
    ) AS k
    CROSS JOIN LATERAL (
        SELECT id, t_send_ms FROM {Turn._meta.db_table}
        WHERE trace_id = k.id AND t_send_ms >= k.start_ms - {WINDOW_SLACK_MS}
          AND t_send_ms <= k.end_ms + {WINDOW_SLACK_MS} AND t_send_ms <> r.t_send_ms
        OFFSET 0
    ) AS f
), moved_turns AS (
    -- Skipped whole (a one-time filter) when no turn moved, the usual case. The old
    -- rows' span of send times prunes the day partitions as the statement starts (an
    -- id list alone cannot: each day's index was probed).
    DELETE FROM {Turn._meta.db_table} x
    WHERE EXISTS (SELECT 1 FROM stale_turns)
      AND x.t_send_ms >= (SELECT min(t_send_ms) FROM stale_turns)
      AND x.t_send_ms <= (SELECT max(t_send_ms) FROM stale_turns)
      AND x.id = ANY(ARRAY(SELECT id FROM stale_turns))
), b AS (
    INSERT INTO {Span._meta.db_table} ({span_names})
    SELECT {", ".join(f"r.{f.column}" for f in span_cols)}
    FROM jsonb_to_recordset(%(spans)s::jsonb) AS r({recordset_of(span_cols)})
    ORDER BY r.trace_id, r.span_id
    ON CONFLICT (app_id, trace_id, span_id, start_ns)
    DO UPDATE SET {_set(Span, BROWSER_SPAN_UPDATE)}
), stale_spans AS (
    -- Spans are day partitions by start_ns (rumserver.partitions), so it ends their
    -- unique key, and a browser span stitched again with another clock skew is
    -- inserted above at its new start. Its row at the old start is found here: a
    -- browser span starts at its turn's send, so the old start is the stored turn's
    -- (read before this statement's writes), and only a turn that moved probes the
    -- spans, in the partition of that start. The stored turn by its whole key
    -- (its send time is its trace's start: correlator.models.TraceOfTurn), so one
    -- day partition of turns is read, not each day's index.
    SELECT o.id, o.start_ns
    FROM jsonb_to_recordset(%(spans)s::jsonb) AS r(app_id bigint, trace_id text,
                                                   span_id text, start_ns bigint)
    CROSS JOIN LATERAL (
        SELECT id, start_ms FROM {Trace._meta.db_table}
        WHERE app_id = r.app_id AND trace_id = r.trace_id OFFSET 0
    ) AS k
    CROSS JOIN LATERAL (
        SELECT round(t_send_ms * 1e6)::bigint AS ns FROM {Turn._meta.db_table}
        WHERE trace_id = k.id AND t_send_ms = k.start_ms OFFSET 0
    ) AS f
    CROSS JOIN LATERAL (
        SELECT id, start_ns FROM {Span._meta.db_table}
        WHERE app_id = r.app_id AND trace_id = r.trace_id AND span_id = r.span_id
          AND start_ns BETWEEN f.ns - 1 AND f.ns + 1 AND start_ns <> r.start_ns
        OFFSET 0
    ) AS o
    WHERE f.ns <> r.start_ns
), moved_spans AS (
    -- Skipped whole (a one-time filter) when nothing moved, the usual case; pruned
    -- by the old rows' span of starts, as moved_turns.
    DELETE FROM {Span._meta.db_table} x
    WHERE EXISTS (SELECT 1 FROM stale_spans)
      AND x.start_ns >= (SELECT min(start_ns) FROM stale_spans)
      AND x.start_ns <= (SELECT max(start_ns) FROM stale_spans)
      AND x.id = ANY(ARRAY(SELECT id FROM stale_spans))
), redo AS (
    -- The earlier turns a turn of this batch regenerates, not flagged yet: their
    -- traces are stitched again once this commits (so that stitch sees this batch's
    -- turns). Flagging their rows here would miss a turn another sweep is writing
    -- right now; found by its raw event, committed at ingest, it is not missed.
    -- Events are day partitions by their time on the browser's clock, which is the
    -- regenerating turn's clock too: the earlier turn's event is looked for near that
    -- turn's send first (a day or two of partitions, pruned as each probe runs), and
    -- in every other day only when it is not there (by span id alone, each probe
    -- descended every day partition's index). Whether its turn is flagged already is
    -- read within the skew a stitch applies to that event's time.
    INSERT INTO {Restitch._meta.db_table} (app_id, trace_id, marked_at)
    SELECT DISTINCT k.app_id, e.trace_id, %(now)s::timestamptz
    FROM unnest(%(regen_apps)s::bigint[], %(regen_spans)s::text[], %(regen_sent)s::float8[])
         AS k(app_id, span_id, sent_ms)
    CROSS JOIN LATERAL (
        SELECT x.trace_id, x.ts_ms FROM {BrowserEvent._meta.db_table} x
        WHERE {_turn_event_of("x")} AND {_near("x")}
        UNION ALL
        SELECT x.trace_id, x.ts_ms FROM {BrowserEvent._meta.db_table} x
        WHERE {_turn_event_of("x")} AND NOT {_near("x")}
          AND NOT EXISTS (
              SELECT 1 FROM {BrowserEvent._meta.db_table} y
              WHERE {_turn_event_of("y")} AND {_near("y")}
          )
    ) AS e
    -- A scalar subquery, not NOT EXISTS: that became an anti join, which read every
    -- day partition of turns; this is one probe an event, pruned as it runs.
    WHERE (
        SELECT 1 FROM {Turn._meta.db_table} f
        WHERE f.app_id = k.app_id AND f.span_id = k.span_id AND f.regenerated
          AND f.t_send_ms >= e.ts_ms - {WINDOW_SLACK_MS}
          AND f.t_send_ms <= e.ts_ms + {WINDOW_SLACK_MS}
        LIMIT 1
    ) IS NULL
), touched AS (
    -- Read before the writes above (one snapshot for the whole statement): where
    -- the traces started, and where their turns' conversations began; then where
    -- the traces start now.
    -- LATERAL ... OFFSET 0: one index probe a key, whatever the statistics say (as a
    -- join, a plan made while the table was small scanned all of it every batch).
    SELECT k.app_id, o.start_ms AS ms
    FROM unnest(%(key_apps)s::bigint[], %(key_traces)s::text[]) AS k(app_id, trace_id)
    CROSS JOIN LATERAL (
        SELECT start_ms FROM {Trace._meta.db_table}
        WHERE app_id = k.app_id AND trace_id = k.trace_id OFFSET 0
    ) AS o
    UNION ALL
    -- A conversation's first turn, within the send times it spans (Conversation):
    -- the day partitions outside them are pruned as the probe runs. The application
    -- is checked after it, as in selectors.conversation_openers (why: there).
    SELECT c.app_id, x.t_send_ms
    FROM unnest(%(conv_apps)s::bigint[], %(conv_ids)s::text[]) AS c(app_id, conversation_id)
    CROSS JOIN LATERAL (
        SELECT first_send_ms, last_send_ms FROM {Conversation._meta.db_table}
        WHERE app_id = c.app_id AND conversation_id = c.conversation_id OFFSET 0
    ) AS s
    CROSS JOIN LATERAL (
        SELECT t_send_ms FROM (
            SELECT app_id, span_id, t_send_ms FROM {Turn._meta.db_table}
            WHERE conversation_id = c.conversation_id
              AND t_send_ms >= s.first_send_ms AND t_send_ms <= s.last_send_ms
            OFFSET 0
        ) AS y
        WHERE app_id = c.app_id
        ORDER BY t_send_ms, span_id LIMIT 1
    ) AS x
    UNION ALL
    SELECT r.app_id, r.start_ms
    FROM jsonb_to_recordset(%(traces)s::jsonb) AS r(app_id bigint, start_ms double precision)
), conversations AS (
    -- Widen each conversation's span of send times to its turns written above (the
    -- ``touched`` probe reads the span as it was before this statement).
    INSERT INTO {Conversation._meta.db_table} AS c (app_id, conversation_id, first_send_ms,
                                                     last_send_ms)
    SELECT r.app_id, r.conversation_id, min(r.t_send_ms), max(r.t_send_ms)
    FROM jsonb_to_recordset(%(turns)s::jsonb) AS r(app_id bigint, conversation_id text,
                                                   t_send_ms double precision)
    GROUP BY 1, 2
    ORDER BY 1, 2  -- one lock order for concurrent sweeps
    {_widen_on_conflict("LEAST", "GREATEST")}
), marks AS (
    INSERT INTO {DirtyRollup._meta.db_table} (app_id, period, start, first_marked_at,
                                              last_marked_at)
    SELECT DISTINCT app_id, '{Rollup.Period.MINUTE.value}',
           to_timestamp(floor(ms / 60000) * 60), %(now)s::timestamptz, %(now)s::timestamptz
    FROM touched
    ORDER BY 1, 3  -- one lock order for concurrent sweeps
    ON CONFLICT (app_id, period, start) DO UPDATE SET last_marked_at = excluded.last_marked_at
)
SELECT count(*) FROM t
"""


# Where a regenerated turn's raw event is looked for first, around the regenerating
# turn's send on the same browser's clock: a regeneration nearly always comes minutes
# after the answer it replaces, and no more than a day after in all but a few. After
# the send too, by an hour: a clock set back in between, or a client that dates a
# turn event when its answer ends.
REGENERATED_NEAR_BEFORE_MS = 24 * 3_600_000
REGENERATED_NEAR_AFTER_MS = 3_600_000


def _turn_event_of(alias: str) -> str:
    """The raw turn event of the span ``k`` names (the ``redo`` probe)."""
    return (
        f"{alias}.app_id = k.app_id AND {alias}.type = '{BrowserEvent.Type.TURN.value}' "
        f"AND {alias}.span_id = k.span_id AND {alias}.trace_id <> ''"
    )


def _near(alias: str) -> str:
    """An event's time near the send ``k.sent_ms`` (the ``redo`` probe's first look)."""
    return (
        f"({alias}.ts_ms >= k.sent_ms - {REGENERATED_NEAR_BEFORE_MS} "
        f"AND {alias}.ts_ms <= k.sent_ms + {REGENERATED_NEAR_AFTER_MS})"
    )


@cache
def _span_defaults() -> dict[str, Any]:
    return record_of(Span(), columns_of(Span))


def browser_span_record(**values: Any) -> dict[str, Any]:
    """A browser span's row (column -> value): the given values over Span's defaults."""
    return {**_span_defaults(), **values}


def write_stitched(
    *,
    traces: list[dict[str, Any]],
    turns: list[dict[str, Any]],
    browser_spans: list[dict[str, Any]],
    keys: set[tuple[int, str]],
    now: datetime,
    browser_sent: dict[tuple[int, str], float],
) -> None:
    """Write a stitched batch (``keys``: every (app id, trace id) it stitched), flag
    the earlier turns its turns regenerate, and mark the rollup minutes it may
    change: where its traces started before and start now, and where its turns'
    conversations began.

    Rows are column -> value dicts. ``turns[i]`` belongs with ``browser_spans[i]``,
    whose ``trace_id`` names its trace (a turn row's ``trace_id`` is the trace's key,
    known only once the trace is written). ``browser_sent``: each turn's send time on
    its browser's clock by (app id, span id), where the turn it regenerates is looked
    for first (a turn missing: in every day)."""
    conversations = sorted({(turn["app_id"], turn["conversation_id"]) for turn in turns})
    # A turn regenerating one of this batch finds it in ``replaced`` (traces_stitch);
    # one regenerating an earlier turn has that turn flagged here (PostgreSQL: its
    # trace stitched again, see ``redo`` and ``restitches_queue``).
    own = {(turn["app_id"], turn["span_id"]) for turn in turns}
    regenerated = sorted(
        (t["app_id"], t["regenerate_of"], browser_sent.get((t["app_id"], t["span_id"]), 0.0))
        for t in turns
        if t["regenerate_of"] and (t["app_id"], t["regenerate_of"]) not in own
    )
    if connection.vendor == "postgresql":
        turn_records = [
            {**turn, "trace_key": span["trace_id"]}
            for turn, span in zip(turns, browser_spans, strict=True)
        ]
        ordered = sorted(keys)
        params = {
            "traces": encode_json(traces).decode(),
            "turns": encode_json(turn_records).decode(),
            "spans": encode_json(browser_spans).decode(),
            "key_apps": [app for app, _ in ordered],
            "key_traces": [trace for _, trace in ordered],
            "conv_apps": [app for app, _ in conversations],
            "conv_ids": [conversation for _, conversation in conversations],
            "regen_apps": [app for app, _, _ in regenerated],
            "regen_spans": [span for _, span, _ in regenerated],
            "regen_sent": [ms for _, _, ms in regenerated],
            "now": now,
        }
        execute_prepared(_postgres_sql(), params)
        return
    # One writer at a time here (SQLite): flag the earlier turns' rows directly.
    stale = _stale_minutes(keys=keys, conversations=conversations)
    _write_orm(
        traces=[Trace(**row) for row in traces],
        turns=[Turn(**row) for row in turns],
        browser_spans=[Span(**row) for row in browser_spans],
    )
    conversations_widen((t["app_id"], t["conversation_id"], t["t_send_ms"]) for t in turns)
    _mark(stale | {(t["app_id"], t["start_ms"]) for t in traces}, now=now)
    by_app: dict[int, list[str]] = defaultdict(list)
    for app_id, span_id, _ in regenerated:
        by_app[app_id].append(span_id)
    for app_id, span_ids in sorted(by_app.items()):
        stale_flags = Turn.objects.filter(app_id=app_id, span_id__in=span_ids, regenerated=False)
        stale_flags.update(regenerated=True)


def _stale_minutes(
    *, keys: set[tuple[int, str]], conversations: list[tuple[int, str]]
) -> set[tuple[int, float]]:
    """(app id, epoch ms) where these traces started and their conversations began,
    before the rewrite (what the PostgreSQL statement's ``touched`` reads)."""
    traces: dict[int, list[str]] = defaultdict(list)
    for app_id, trace_id in keys:
        traces[app_id].append(trace_id)
    by_app: dict[int, list[str]] = defaultdict(list)
    for app_id, conversation in conversations:
        by_app[app_id].append(conversation)
    found: set[tuple[int, float]] = set()
    for app_id in sorted(traces.keys() | by_app.keys()):
        starts = selectors.trace_starts(app_id=app_id, trace_ids=traces.get(app_id, []))
        found |= {(app_id, start) for start in starts.values()}
        openers = selectors.conversation_openers(
            app_id=app_id, conversations=by_app.get(app_id, [])
        )
        found |= {(app_id, rows[0].t_send_ms) for rows in openers.values()}
    return found


def conversations_widen(sent: Iterable[tuple[int, str, float]]) -> None:
    """Widen each conversation's span of send times (``Conversation``) to take in
    these turns, (app id, conversation id, send time) each: what the PostgreSQL
    statement's ``conversations`` does, for SQLite and for turns written otherwise."""
    spans: dict[tuple[int, str], tuple[float, float]] = {}
    for app_id, conversation, ms in sent:
        first, last = spans.get((app_id, conversation), (ms, ms))
        spans[(app_id, conversation)] = (min(first, ms), max(last, ms))
    least, greatest = ("LEAST", "GREATEST") if connection.vendor == "postgresql" else ("min", "max")
    with connection.cursor() as cursor:
        cursor.executemany(
            f"""INSERT INTO {Conversation._meta.db_table} AS c
                    (app_id, conversation_id, first_send_ms, last_send_ms)
                VALUES (%s, %s, %s, %s) {_widen_on_conflict(least, greatest)}""",
            [(app, conversation, *span) for (app, conversation), span in sorted(spans.items())],
        )


def _widen_on_conflict(least: str, greatest: str) -> str:
    """A conversation's span of send times only ever widens: the upsert's conflict
    clause (the table aliased ``c``), with the database's two-argument min and max."""
    return (
        "ON CONFLICT (app_id, conversation_id) DO UPDATE "
        f"SET first_send_ms = {least}(c.first_send_ms, excluded.first_send_ms), "
        f"last_send_ms = {greatest}(c.last_send_ms, excluded.last_send_ms)"
    )


def _mark(moments: set[tuple[int, float]], *, now: datetime) -> None:
    rollups_mark({(app_id, MINUTE, minute_of(ms)) for app_id, ms in moments}, now=now)


def _write_orm(*, traces: list[Trace], turns: list[Turn], browser_spans: list[Span]) -> None:
    Trace.objects.bulk_create(
        traces, update_conflicts=True, unique_fields=["app", "trace_id"], update_fields=TRACE_UPDATE
    )
    by_key = {(t.app_id, t.trace_id): t for t in traces}
    if any(t.pk is None for t in traces):  # backends that do not return ids on upsert
        rows = Trace.objects.filter(trace_id__in=list({t.trace_id for t in traces}))
        for app_id, trace_id, pk in rows.values_list("app_id", "trace_id", "id"):
            if (app_id, trace_id) in by_key:
                by_key[(app_id, trace_id)].pk = pk
    for turn, span in zip(turns, browser_spans, strict=True):
        turn.trace_id = by_key[(turn.app_id, span.trace_id)].pk
    Turn.objects.bulk_create(
        turns, update_conflicts=True, unique_fields=["trace"], update_fields=TURN_UPDATE
    )
    Span.objects.bulk_create(
        browser_spans,
        update_conflicts=True,
        unique_fields=["app", "trace_id", "span_id"],
        update_fields=BROWSER_SPAN_UPDATE,
    )


_MARK_TAKEN = upsert_sql(
    "SELECT DISTINCT app_id, trace_id, %s::timestamptz, %s::timestamptz FROM taken ORDER BY 1, 2"
)


def restitches_queue(*, now: datetime, limit: int = 1000) -> int:
    """Move traces to stitch again (``Restitch``) to the dirty traces, in a
    transaction of their own that holds no claim: marking a claimed trace waits for
    its sweep to commit, and can wait on no one who waits on it. Returns how many."""
    if connection.vendor != "postgresql":
        return 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"""WITH taken AS (
                    DELETE FROM {Restitch._meta.db_table} WHERE id IN (
                        SELECT id FROM {Restitch._meta.db_table}
                        ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
                    ) RETURNING app_id, trace_id
                ), marked AS ({_MARK_TAKEN})
                SELECT count(*) FROM taken""",
            [limit, now, now],
        )
        taken: int = cursor.fetchone()[0]
        return taken
