"""Reading a stitch batch's raw rows as plain values: the spans, each trace's turn
event with its session key, and each session's clock samples.

On PostgreSQL three statements, joined from ``unnest()`` of the batch's keys (index
probes whatever the statistics say), return only primitive columns: times as
integer microseconds, the turn event as JSON text decoded with msgspec. Django's
row conversion (a timezone-aware datetime per timestamp, ``json.loads`` per event)
was most of a worker's CPU in bench/stitch. Elsewhere (SQLite, the embedded default)
the ORM reads the same rows into the same shapes.

Day partitions (``rumserver.partitions``): an index probe by trace or session alone
reads every day's index, tens to hundreds of them. So the sweep gives each trace a
window of server time (when its data arrived, and where its stitched trace lies), and
each probe is bounded to it by the partition key: PostgreSQL reads the few days it
covers (and the default partition). The window is widened by ``WINDOW_SLACK_MS``: a
browser's ``ts`` is on its own clock, up to ``MAX_SKEW_MS`` off (further off is no sane
clock, and such events are found by the unbounded probe below). A trace whose probe
finds nothing in its window (an API client's trace has no turn, a browser-only trace
no spans, a clock days off) is probed again unbounded: correct whatever the window,
fast for the traces that are where they should be.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import msgspec
from django.db import connection
from django.db.models.fields.json import KT

from correlator.epoch import epoch_us
from correlator.models import Trace
from correlator.stitch.rules import (
    MAX_SKEW_MS,
    WINDOW_SLACK_MS,
    ClockSample,
    beacon_sample,
    server_timing_sample,
)
from rumserver.models import BrowserEvent, BrowserSession, Span
from rumserver.roles import PINNED, SOURCE
from rumserver.sql import fetch_prepared


@dataclass(slots=True)
class StoredSpan:
    """The columns of an OTLP span the stitch reads. ``resource`` holds only
    ``llmrum.role`` and ``llmrum.source`` (what ``rumserver.roles`` looks at)."""

    id: int
    app_id: int
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    role: str
    service: str
    start_ns: int
    end_ns: int
    received_us: int
    gen_ai_operation: str
    request_model: str
    response_model: str
    ttft_s: float | None
    ttft_source: str
    queue_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    resource: dict[str, str]


@dataclass(slots=True)
class TurnEvent:
    app_id: int
    trace_id: str
    span_id: str
    session_id: int  # BrowserSession's primary key
    received_us: int
    data: dict[str, Any]
    session_key: str = ""  # the browser's own session id


@dataclass
class Batch:
    spans: dict[tuple[int, str], list[StoredSpan]] = field(default_factory=dict)
    turns: dict[tuple[int, str], TurnEvent] = field(default_factory=dict)
    # session pk -> its clock samples (``load_clock_samples``).
    clock_samples: dict[int, list[ClockSample]] = field(default_factory=dict)


_SPAN_COLUMNS = (
    "id",
    "app_id",
    "trace_id",
    "span_id",
    "parent_span_id",
    "kind",
    "role",
    "service",
    "start_ns",
    "end_ns",
    "received_at",
    "gen_ai_operation",
    "request_model",
    "response_model",
    "ttft_s",
    "ttft_source",
    "queue_s",
    "input_tokens",
    "output_tokens",
)
_decode_event = msgspec.json.Decoder(dict).decode

# Server epoch ms (lo, hi) a trace's raw rows are looked for in; None: anywhere.
Window = tuple[float, float]
Windows = dict[tuple[int, str], Window]


def _resource(pinned_role: str | None, source: str | None) -> dict[str, str]:
    """The resource attributes ``rumserver.roles`` reads."""
    resource = {PINNED: pinned_role} if pinned_role else {}
    if source:
        resource[SOURCE] = source
    return resource


def load_batch(keys: list[tuple[int, str]], windows: Windows | None = None) -> Batch:
    """The raw rows of these (app id, trace id) traces; ``windows``: where in time each
    trace's data arrived (server epoch ms), so that only those days are read."""
    keys = sorted(set(keys))
    if connection.vendor != "postgresql":
        batch = Batch(spans=_orm_spans(keys), turns=_orm_turns(keys))
        batch.clock_samples = load_clock_samples({t.session_id for t in batch.turns.values()})
        return batch
    bounds = _bounds(keys, windows) if windows is not None else None
    batch = Batch(spans=_pg_spans(keys, bounds), turns=_pg_turns(keys, bounds))
    if bounds is not None:  # what the window missed, anywhere
        batch.spans.update(_pg_spans([k for k in keys if k not in batch.spans], None))
        batch.turns.update(_pg_turns([k for k in keys if k not in batch.turns], None))
    # A session's samples around its turns, on the browser's clock like the turns.
    sessions: dict[int, Window] = {}
    for turn in batch.turns.values():
        at = float(turn.data.get("ts") or turn.data.get("t_send") or 0.0)
        lo, hi = sessions.get(turn.session_id, (at, at))
        sessions[turn.session_id] = (min(lo, at), max(hi, at))
    batch.clock_samples = _pg_samples(sorted(sessions), sessions if bounds is not None else None)
    return batch


def _bounds(keys: list[tuple[int, str]], windows: Windows) -> dict[tuple[int, str], Window]:
    """Each key's window widened by the slack, and by its stitched trace's own span of
    time when it has one (late data re-stitches a trace stitched days ago)."""
    bounds = {key: windows.get(key, (0.0, 0.0)) for key in keys}
    rows = fetch_prepared(
        f"SELECT t.app_id, t.trace_id, t.start_ms, t.end_ms FROM {_KEYS} "
        f"CROSS JOIN LATERAL (SELECT * FROM {Trace._meta.db_table} "
        "WHERE app_id = k.app_id AND trace_id = k.trace_id) AS t",
        _key_params(keys),
    )
    for app_id, trace_id, start_ms, end_ms in rows:
        lo, hi = bounds[(app_id, trace_id)]
        bounds[(app_id, trace_id)] = (min(lo, start_ms), max(hi, end_ms))
    return {key: (lo - WINDOW_SLACK_MS, hi + WINDOW_SLACK_MS) for key, (lo, hi) in bounds.items()}


def _bound_params(
    keys: list[tuple[int, str]], bounds: dict[tuple[int, str], Window] | None, scale: float
) -> dict[str, Any]:
    """The keys, and each one's window in the partition key's unit (``scale`` a ms);
    an unbounded probe gets the whole range of the column type."""
    params: dict[str, Any] = dict(_key_params(keys))
    if bounds is None:
        params["lo"], params["hi"] = [_MIN] * len(keys), [_MAX] * len(keys)
    else:
        params["lo"] = [int(bounds[key][0] * scale) for key in keys]
        params["hi"] = [int(bounds[key][1] * scale) for key in keys]
    return {**params, **_span_of(params["lo"], params["hi"])}


def _span_of(lo: list[int], hi: list[int]) -> dict[str, int]:
    """The batch's span of the keys' windows, ``%(all_lo)s`` to ``%(all_hi)s``: beside
    each key's own bounds (``k.lo``, ``k.hi``, which prune the day partitions as each
    probe runs, a key at a time) constants that PostgreSQL prunes them by as it plans.
    By the keys' bounds alone it planned every day partition for each batch, which
    took more of a stitched turn's time than the probes did with a month of them."""
    return {"all_lo": min(lo, default=0), "all_hi": max(hi, default=0)}


# Outside any partition's range: the default partition and every day alike.
_MIN, _MAX = -(2**62), 2**62


# -- PostgreSQL ------------------------------------------------------------------------

_KEYS = "unnest(%(apps)s::bigint[], %(traces)s::text[]) AS k(app_id, trace_id)"
# The keys with each one's window (``_bound_params``): a probe's ``k.lo``/``k.hi`` prune
# the day partitions at run time, a trace at a time.
_BOUNDED_KEYS = (
    "unnest(%(apps)s::bigint[], %(traces)s::text[], %(lo)s::bigint[], %(hi)s::bigint[]) "
    "AS k(app_id, trace_id, lo, hi)"
)
_US = "(extract(epoch FROM {0}) * 1000000)::bigint"


def _key_params(keys: list[tuple[int, str]]) -> dict[str, list[int] | list[str]]:
    return {"apps": [app for app, _ in keys], "traces": [trace for _, trace in keys]}


def _pg_spans(
    keys: list[tuple[int, str]], bounds: dict[tuple[int, str], Window] | None
) -> dict[tuple[int, str], list[StoredSpan]]:
    if not keys:
        return {}
    select = ", ".join(
        _US.format("s.received_at") if c == "received_at" else f"s.{c}" for c in _SPAN_COLUMNS
    )
    # A LATERAL probe of the (app, trace, span) key a trace: as a join, PostgreSQL
    # hashed the whole span table each batch while it was small (statistics or not),
    # a cost that grew with the table until the plan changed.
    rows = fetch_prepared(
        f"SELECT {select}, s.resource ->> 'llmrum.role', s.resource ->> 'llmrum.source' "
        f"FROM {_BOUNDED_KEYS} CROSS JOIN LATERAL (SELECT * FROM {Span._meta.db_table} "
        "WHERE app_id = k.app_id AND trace_id = k.trace_id "
        "AND start_ns >= k.lo AND start_ns < k.hi "
        "AND start_ns >= %(all_lo)s AND start_ns < %(all_hi)s "
        f"AND role <> '{Span.Role.BROWSER.value}' ORDER BY span_id) AS s",
        _bound_params(keys, bounds, 1_000_000),
    )
    out: dict[tuple[int, str], list[StoredSpan]] = defaultdict(list)
    for *columns, pinned_role, source in rows:
        span = _stored_span(columns, pinned_role, source)
        out[(span.app_id, span.trace_id)].append(span)
    return out


def _stored_span(columns: list[Any], pinned_role: str | None, source: str | None) -> StoredSpan:
    # The fields in order, resource last (one tuple: mypy cannot check a call that
    # spreads a row of unknown length and then names a field).
    return StoredSpan(*(*columns, _resource(pinned_role, source)))


# What the stitch reads of a turn event: not the captured texts, nor the gaps when the
# summary of them is complete (turn_metrics then reads only the summary). They are
# most of a long answer's event; PostgreSQL would print them and msgspec parse them.
_STITCHED_PART = (
    "CASE WHEN e.data -> 'tbt_summary' ?& array['p50', 'p95', 'max'] "
    "THEN e.data - array['prompt_text', 'answer_text', 'tbt_gaps'] "
    "ELSE e.data - array['prompt_text', 'answer_text'] END"
)


def _pg_turns(
    keys: list[tuple[int, str]], bounds: dict[tuple[int, str], Window] | None
) -> dict[tuple[int, str], TurnEvent]:
    if not keys:
        return {}
    # Each trace's first turn event by a probe of the trace id index alone: the
    # application and type are tested above the OFFSET 0 fence, where no index can
    # take them. Without statistics ``app_id = …`` looks as selective as the trace id,
    # and the smaller (app, span) index of turn events won: every turn of the
    # application read per trace (bench/stitch --no-analyze, 130 turns/s).
    # The session key by a scalar subquery (a probe per turn): as a join, PostgreSQL
    # hashed the whole sessions table each batch.
    rows = fetch_prepared(
        f"SELECT e.app_id, e.trace_id, e.span_id, "
        f"e.session_id, {_US.format('e.received_at')}, ({_STITCHED_PART})::text, "
        f"(SELECT b.session_id FROM {BrowserSession._meta.db_table} b WHERE b.id = e.session_id) "
        f"FROM {_BOUNDED_KEYS} CROSS JOIN LATERAL ("
        f"SELECT * FROM (SELECT * FROM {BrowserEvent._meta.db_table} "
        "WHERE trace_id = k.trace_id AND ts_ms >= k.lo AND ts_ms < k.hi "
        "AND ts_ms >= %(all_lo)s AND ts_ms < %(all_hi)s OFFSET 0) AS x "
        f"WHERE x.app_id = k.app_id AND x.type = '{BrowserEvent.Type.TURN.value}' "
        "ORDER BY x.ts_ms, x.event_id LIMIT 1) AS e",
        _bound_params(keys, bounds, 1),
    )
    return {
        (app_id, trace_id): TurnEvent(
            app_id, trace_id, span_id, session_pk, received_us, _decode(text), session_key or ""
        )
        for app_id, trace_id, span_id, session_pk, received_us, text, session_key in rows
    }


def _decode(text: str) -> dict[str, Any]:
    try:
        return _decode_event(text)
    except msgspec.DecodeError:  # e.g. an integer past 64 bits, which json reads
        decoded: dict[str, Any] = json.loads(text)
        return decoded


# -- Elsewhere: the ORM ----------------------------------------------------------------


def _orm_spans(keys: list[tuple[int, str]]) -> dict[tuple[int, str], list[StoredSpan]]:
    wanted = set(keys)
    rows = (
        Span.objects.filter(trace_id__in=sorted({trace for _, trace in keys}))
        .exclude(role=Span.Role.BROWSER)
        .order_by("app_id", "trace_id", "span_id")
        .values_list(*_SPAN_COLUMNS, KT("resource__llmrum.role"), KT("resource__llmrum.source"))
    )
    out: dict[tuple[int, str], list[StoredSpan]] = defaultdict(list)
    for *columns, pinned_role, source in rows:
        columns[10] = epoch_us(columns[10])
        span = _stored_span(columns, pinned_role, source)
        if (span.app_id, span.trace_id) in wanted:
            out[(span.app_id, span.trace_id)].append(span)
    return out


def _orm_turns(keys: list[tuple[int, str]]) -> dict[tuple[int, str], TurnEvent]:
    wanted = set(keys)
    events = BrowserEvent.objects.filter(
        trace_id__in=sorted({trace for _, trace in keys}), type=BrowserEvent.Type.TURN
    )
    turns: dict[tuple[int, str], TurnEvent] = {}
    for app_id, trace_id, span_id, session_pk, received_at, data in events.order_by(
        "ts_ms", "event_id"
    ).values_list("app_id", "trace_id", "span_id", "session_id", "received_at", "data"):
        if (app_id, trace_id) in wanted:
            turns.setdefault(
                (app_id, trace_id),
                TurnEvent(app_id, trace_id, span_id, session_pk, epoch_us(received_at), data),
            )
    sessions = BrowserSession.objects.filter(id__in={t.session_id for t in turns.values()})
    keys_by_pk = dict(sessions.values_list("id", "session_id"))
    for turn in turns.values():
        turn.session_key = keys_by_pk.get(turn.session_id, "")
    return turns


# -- Clock samples: both databases -----------------------------------------------------

# Every clock sample of the sessions in a stitch batch (DESIGN.md §10.3).
#
# Two kinds, each an interval on θ (server clock minus browser clock):
# - each beacon batch the session sent: received_at - sent_at bounds θ from above;
# - each turn of the session whose response carried the backend helper's
#   ``Server-Timing`` echo: bounded on both sides (``rules.server_timing_sample``).
#
# Samples are per session, not per turn, because one quick round trip of a session is
# what pins down the skew of its slow ones. Every event of a batch shares its
# ``sent_at_ms`` and ``received_at``, so beacons are grouped by them: one sample a batch.

# The parts of a turn event ``server_timing_sample`` reads.
_ECHO_FIELDS = ("server_timing", "t_send", "t_headers")


def load_clock_samples(session_pks: set[int]) -> dict[int, list[ClockSample]]:
    """session pk -> its samples."""
    if not session_pks:
        return {}
    if connection.vendor == "postgresql":
        return _pg_samples(sorted(session_pks), None)
    return _orm_samples(session_pks)


def _pg_samples(
    session_pks: list[int], around: dict[int, Window] | None
) -> dict[int, list[ClockSample]]:
    """``around``: browser epoch ms each session's turns lie in; its samples are read
    within ``WINDOW_SLACK_MS`` of them (None: all of them)."""
    if not session_pks:
        return {}
    if around is None:
        lo, hi = [_MIN] * len(session_pks), [_MAX] * len(session_pks)
    else:
        lo = [int(around[pk][0] - WINDOW_SLACK_MS) for pk in session_pks]
        hi = [int(around[pk][1] + WINDOW_SLACK_MS) for pk in session_pks]
    table = BrowserEvent._meta.db_table
    delta = "extract(epoch FROM e.received_at)::float8 * 1000 - e.sent_at_ms"
    echo = ", ".join(f"'{name}', e.data -> '{name}'" for name in _ECHO_FIELDS)
    # Both halves probe the events by session (the session_id index) from unnest(),
    # a LATERAL probe a session with every other condition above the OFFSET 0 fence:
    # one plan whatever the statistics say. As joins, a never-analysed table had
    # PostgreSQL hash every event, and AND the probe with the whole turn-event index.
    events = (
        f"CROSS JOIN LATERAL (SELECT * FROM {table} WHERE session_id = k.id "
        "AND ts_ms >= k.lo AND ts_ms < k.hi "
        "AND ts_ms >= %(all_lo)s AND ts_ms < %(all_hi)s OFFSET 0) AS e"
    )
    sessions = "unnest(%(sessions)s::bigint[], %(lo)s::bigint[], %(hi)s::bigint[]) AS k(id, lo, hi)"
    rows = fetch_prepared(
        f"SELECT e.session_id, e.sent_at_ms, min({delta}), NULL::text "
        f"FROM {sessions} {events} "
        f"WHERE abs({delta}) <= %(max_skew)s GROUP BY e.session_id, e.sent_at_ms "
        "UNION ALL "
        f"SELECT e.session_id, NULL, NULL, jsonb_build_object({echo})::text "
        f"FROM {sessions} {events} "
        f"WHERE e.type = '{BrowserEvent.Type.TURN.value}' AND e.data ? 'server_timing'",
        {"sessions": session_pks, "lo": lo, "hi": hi, "max_skew": MAX_SKEW_MS, **_span_of(lo, hi)},
    )
    out: dict[int, list[ClockSample]] = defaultdict(list)
    for session_pk, sent_at_ms, best_delta, echo_text in rows:
        if echo_text is None:
            sample = beacon_sample(sent_at_ms, best_delta)
        else:
            sample = server_timing_sample(_decode_event(echo_text))
        if sample is not None:
            out[session_pk].append(sample)
    return out


def _orm_samples(session_pks: set[int]) -> dict[int, list[ClockSample]]:
    out: dict[int, list[ClockSample]] = defaultdict(list)
    events = BrowserEvent.objects.filter(session_id__in=session_pks)
    best: dict[tuple[int, float], float] = {}
    for session_pk, received_at, sent_at_ms in events.values_list(
        "session_id", "received_at", "sent_at_ms"
    ).distinct():
        delta = received_at.timestamp() * 1000 - sent_at_ms
        key = (session_pk, sent_at_ms)
        best[key] = min(delta, best.get(key, delta))
    for (session_pk, sent_at_ms), delta in best.items():
        sample = beacon_sample(sent_at_ms, delta)
        if sample is not None:
            out[session_pk].append(sample)
    turns = events.filter(type=BrowserEvent.Type.TURN, data__has_key="server_timing")
    for session_pk, data in turns.values_list("session_id", "data"):
        sample = server_timing_sample(data)
        if sample is not None:
            out[session_pk].append(sample)
    return out
