"""Writing a stitched batch: traces (with the roles the stitch decided), their
turns and browser spans, and the rollup minutes they touch, all in the caller's
transaction.

On PostgreSQL one hand-written statement does it (data-modifying CTEs, rows as
jsonb documents, as ingest does): Django's bulk_create sends every column as an
array that psycopg converts item by item in Python, and bulk_update builds a
CASE per row, which together were half of a worker's CPU in bench/stitch. A
second one follows only when a trace's turn moved to another time: it deletes
the old rows (``_moved_delete``).
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
from rumserver.sql import execute_prepared, fetch_prepared

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
def _postgres_sql(*, regenerations: bool) -> str:
    """The write statement; with ``regenerations``, the text that also flags the
    earlier turns the batch's turns regenerate (``redo``): a batch without any sends
    the text without it, which PostgreSQL plans without that probe's partitions."""
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
), b AS (
    INSERT INTO {Span._meta.db_table} ({span_names})
    SELECT {", ".join(f"r.{f.column}" for f in span_cols)}
    FROM jsonb_to_recordset(%(spans)s::jsonb) AS r({recordset_of(span_cols)})
    ORDER BY r.trace_id, r.span_id
    ON CONFLICT (app_id, trace_id, span_id, start_ns)
    DO UPDATE SET {_set(Span, BROWSER_SPAN_UPDATE)}
){_redo() if regenerations else ""}, touched AS (
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
-- The traces whose turn moved: stored before this statement at another send time
-- (another clock skew, or a trace stitched from its spans before its beacon came).
-- Their turn and browser span were inserted above at the new time; the rows at the
-- old time go in a statement of their own (``_moved_delete``), bounded by these old
-- times as constants. Read in this statement's snapshot, under the traces' row locks
-- (upserted above), as the old rows were.
SELECT k.id, k.start_ms, k.end_ms, r.t_send_ms, r.span_id, r.span_start_ns, r.app_id,
       r.trace_key
FROM jsonb_to_recordset(%(turns)s::jsonb) AS r(app_id bigint, trace_key text, span_id text,
                                               t_send_ms double precision, span_start_ns bigint)
CROSS JOIN LATERAL (
    SELECT id, start_ms, end_ms FROM {Trace._meta.db_table}
    WHERE app_id = r.app_id AND trace_id = r.trace_key AND start_ms <> r.t_send_ms
    OFFSET 0
) AS k
"""


def _redo() -> str:
    return f""",
redo AS (
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
)"""


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
    """An event's time near the send ``k.sent_ms`` (the ``redo`` probe's first look),
    and within the batch's span of those times, ``%(near_lo)s`` to ``%(near_hi)s``:
    the same rows, but constants PostgreSQL prunes the day partitions by as it plans
    (by ``k.sent_ms`` alone it plans every day and prunes as each probe runs)."""
    return (
        f"({alias}.ts_ms >= k.sent_ms - {REGENERATED_NEAR_BEFORE_MS} "
        f"AND {alias}.ts_ms <= k.sent_ms + {REGENERATED_NEAR_AFTER_MS} "
        f"AND {alias}.ts_ms >= %(near_lo)s AND {alias}.ts_ms <= %(near_hi)s)"
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
            {**turn, "trace_key": span["trace_id"], "span_start_ns": span["start_ns"]}
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
        if regenerated:
            sent = [ms for _, _, ms in regenerated]
            params["near_lo"] = min(sent) - REGENERATED_NEAR_BEFORE_MS
            params["near_hi"] = max(sent) + REGENERATED_NEAR_AFTER_MS
        moved = fetch_prepared(_postgres_sql(regenerations=bool(regenerated)), params)
        if moved:
            _moved_delete(moved)
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


def _moved_delete(moved: list[tuple[Any, ...]]) -> None:
    """Delete the turn rows and browser spans that the batch's moved traces (the
    write statement's answer: trace pk, stored start and end, new send, browser span
    id and new start, app id, trace id) left at their old times, in the writer's
    transaction. Turns and spans are day partitions whose unique keys end with those
    times (rumserver.partitions), so a row stitched again at another time was
    inserted beside the old one, not over it.

    The old rows lie within the stored traces' times: a turn within its trace's span
    (and the browser-clock slack), a browser span at its old turn's send, which was
    its trace's start (correlator.models.TraceOfTurn). The batch's span of those times
    goes in as constants, so PostgreSQL plans the few day partitions it covers;
    bounded by each row's own times only, it planned every day partition of both
    tables for every batch (which then pruned them as each probe ran)."""
    names = ("pks", "starts", "ends", "sent", "span_ids", "span_starts", "apps", "trace_ids")
    params: dict[str, Any] = {
        name: list(column) for name, column in zip(names, zip(*moved, strict=True), strict=True)
    }
    first, last = min(params["starts"]), max(params["ends"] + params["starts"])
    params["turns_lo"], params["turns_hi"] = first - WINDOW_SLACK_MS, last + WINDOW_SLACK_MS
    # An old browser span starts at its turn's send rounded to the nanosecond
    # (PostgreSQL's round and Python's may differ by one at a half): within 2.
    params["spans_lo"] = round(first * 1e6) - 2
    params["spans_hi"] = round(max(params["starts"]) * 1e6) + 2
    execute_prepared(_MOVED_DELETE_SQL, params)


_MOVED_DELETE_SQL = f"""
WITH k AS (
    SELECT * FROM unnest(%(pks)s::bigint[], %(starts)s::float8[], %(ends)s::float8[],
                         %(sent)s::float8[], %(span_ids)s::text[], %(span_starts)s::bigint[],
                         %(apps)s::bigint[], %(trace_ids)s::text[])
         AS k(pk, start_ms, end_ms, sent_ms, span_id, span_start_ns, app_id, trace_id)
), stale_turns AS (
    -- A trace's turns within its stored span of time and the browser-clock slack,
    -- but the one just written.
    SELECT f.id
    FROM k CROSS JOIN LATERAL (
        SELECT id FROM {Turn._meta.db_table}
        WHERE trace_id = k.pk
          AND t_send_ms >= k.start_ms - {WINDOW_SLACK_MS}
          AND t_send_ms <= k.end_ms + {WINDOW_SLACK_MS}
          AND t_send_ms >= %(turns_lo)s AND t_send_ms <= %(turns_hi)s
          AND t_send_ms <> k.sent_ms
        OFFSET 0
    ) AS f
), stale_spans AS (
    -- The browser span at the old turn's send: the stored turn by its whole key
    -- (one day partition), then the span by its key and that time.
    SELECT o.id
    FROM k CROSS JOIN LATERAL (
        SELECT round(t_send_ms * 1e6)::bigint AS ns FROM {Turn._meta.db_table}
        WHERE trace_id = k.pk AND t_send_ms = k.start_ms
          AND t_send_ms >= %(turns_lo)s AND t_send_ms <= %(turns_hi)s
        OFFSET 0
    ) AS f
    CROSS JOIN LATERAL (
        SELECT id FROM {Span._meta.db_table}
        WHERE app_id = k.app_id AND trace_id = k.trace_id AND span_id = k.span_id
          AND start_ns BETWEEN f.ns - 1 AND f.ns + 1
          AND start_ns >= %(spans_lo)s AND start_ns <= %(spans_hi)s
          AND start_ns <> k.span_start_ns
        OFFSET 0
    ) AS o
    WHERE f.ns <> k.span_start_ns
), moved_turns AS (
    DELETE FROM {Turn._meta.db_table}
    WHERE t_send_ms >= %(turns_lo)s AND t_send_ms <= %(turns_hi)s
      AND id = ANY(ARRAY(SELECT id FROM stale_turns))
)
DELETE FROM {Span._meta.db_table}
WHERE start_ns >= %(spans_lo)s AND start_ns <= %(spans_hi)s
  AND id = ANY(ARRAY(SELECT id FROM stale_spans))
"""


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
