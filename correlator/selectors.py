"""The correlator's read queries, in one place.

What the API and the report pages show (``visible_applications`` and the trace
queries): every query is limited to the applications a user may see, and reads
stitched rows through indexes.

Lookups of many keys at once that must stay index probes (the stitch's and the
analytics'): on PostgreSQL each is a join from ``unnest()`` of the keys, so the plan
is one parameterized index scan per key whatever the statistics say. Written as
``IN`` lists, a growing table with stale statistics (autovacuum behind, or off) made
the planner scan every turn of the application per stitch batch: bench/stitch, 56 ms
a batch of 200. Elsewhere (SQLite) the ORM asks the same.

Without statistics at all (a fresh deployment, a restore: DESIGN.md §10.7) PostgreSQL
takes ``app_id = …`` to be as selective as a trace id, and an index led by app_id (often
smaller, or partial) wins: every row of the application read per key. So where the key
has an index of its own and no (app, key) index exists, the probe names the key alone
and the application is tested above an ``OFFSET 0`` fence, where no index can take it.
tests/correlator/test_query_plans.py checks these plans on never-analysed tables.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Count, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.fields.json import KeyTransform

from correlator.models import Conversation, Trace, Turn
from correlator.stitch.rules import WINDOW_SLACK_MS
from rumserver import partitions
from rumserver.models import Application, BrowserEvent, BrowserSession, Score, Span


def visible_applications(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Application]:
    """Staff see every application; others those they are members of."""
    if not user.is_authenticated:
        return Application.objects.none()
    if getattr(user, "is_staff", False):
        return Application.objects.all()
    return Application.objects.filter(members__pk=user.pk)


def trace_detail(
    *, user: AbstractBaseUser | AnonymousUser, trace_id: str, app_slug: str | None = None
) -> Trace | None:
    traces = Trace.objects.filter(app__in=visible_applications(user), trace_id=trace_id)
    if app_slug:
        traces = traces.filter(app__slug=app_slug)
    found = list(traces.select_related("app", "turn", "turn__session")[:2])
    return found[0] if len(found) == 1 else None


def trace_spans(trace: Trace, *, limit: int | None = None) -> list[Span]:
    """The trace's spans by start, each with its role in the trace (``Trace.role_of``).
    Read from the days around the trace's own time (its day partitions), and from
    every day only when that found fewer than the stitch counted (a span stamped by a
    clock far off)."""
    spans = Span.objects.filter(app_id=trace.app_id, trace_id=trace.trace_id).order_by(
        "start_ns", "span_id"
    )
    around = spans.filter(
        start_ns__gte=int((trace.start_ms - WINDOW_SLACK_MS) * 1e6),
        start_ns__lt=int((trace.end_ms + WINDOW_SLACK_MS) * 1e6),
    )
    found = list(around[:limit] if limit is not None else around)
    if len(found) < trace.span_count and (limit is None or len(found) < limit):
        found = list(spans[:limit] if limit is not None else spans)
    for span in found:
        span.role = trace.role_of(span)
    return found


SCORE_LIMIT = 200


def trace_scores(trace: Trace) -> list[Score]:
    """The trace's scores, oldest first (by the trace id index; a runaway evaluator
    posting thousands stops at ``SCORE_LIMIT``)."""
    scores = Score.objects.filter(trace_id=trace.trace_id, app_id=trace.app_id)
    return list(scores.order_by("received_at", "id")[:SCORE_LIMIT])


def regeneration_links(turn: Turn) -> tuple[str, str]:
    """(trace id of the turn that regenerated this one, trace id of the turn this one
    regenerates), each "" when there is none or it is not stitched: one probe each,
    by the partial index on ``regenerate_of`` and by (app, span id)."""
    later = ""
    if turn.regenerated:
        found = Turn.objects.filter(app_id=turn.app_id, regenerate_of=turn.span_id)
        later = found.order_by("t_send_ms").values_list("trace__trace_id", flat=True).first() or ""
    earlier = ""
    if turn.regenerate_of:
        found = Turn.objects.filter(app_id=turn.app_id, span_id=turn.regenerate_of)
        earlier = found.values_list("trace__trace_id", flat=True).first() or ""
    return later, earlier


TRACE_ID = re.compile(r"[0-9a-f]{32}")
SEARCH_SESSIONS = 1000  # sessions a search's id may name (a user's, a session's)


def _searched(traces: QuerySet[Trace], q: str, apps: Any) -> QuerySet[Trace]:
    """The traces ``q`` names: a trace id, or the turns of a session, a conversation
    or a user id. Which kind it is is found first by index probes; the list then
    filters by that kind alone, so that its plan starts from that kind's index (the
    matching turns, then their traces by key). One OR over all four kinds left no
    index to start from: PostgreSQL read every turn of the application. An id that
    is of two kinds at once (rare) gets their OR."""
    kinds = []
    if TRACE_ID.fullmatch(q.lower()) and traces.filter(trace_id=q.lower()).exists():
        kinds.append(Q(trace_id=q.lower()))
    conversation = Turn.objects.filter(app__in=apps, conversation_id=q).exclude(conversation_id="")
    if conversation.exists():
        kinds.append(Q(pk__in=conversation.values("trace_id")))
    sessions = BrowserSession.objects.filter(app__in=apps)
    session_pks = {
        *sessions.filter(session_id=q).values_list("pk", flat=True)[:SEARCH_SESSIONS],
        *sessions.filter(user_id=q)
        .exclude(user_id="")
        .values_list("pk", flat=True)[:SEARCH_SESSIONS],
    }
    if session_pks:
        # By the session index alone: the sessions are the user's applications' already.
        turns = Turn.objects.filter(session_id__in=sorted(session_pks))
        kinds.append(Q(pk__in=turns.values("trace_id")))
    if not kinds:
        return traces.none()
    matching = kinds[0]
    for kind in kinds[1:]:
        matching |= kind
    return traces.filter(matching)


def _attribute_values(value: str) -> list[Any]:
    """The values an ``attr`` value stands for: itself as text and, when it reads as
    JSON (a number, true, false), that value too."""
    values: list[Any] = [value]
    try:
        typed = json.loads(value)
    except ValueError:
        typed = None
    if isinstance(typed, bool | int | float) and typed == typed:
        values.append(typed)
    return values


def _with_attribute(
    traces: QuerySet[Trace], key: str, value: str, app_ids: list[int]
) -> QuerySet[Trace]:
    """Traces with a span whose attribute ``key`` is ``value``, as text or, when
    ``value`` reads as JSON (a number, true, false), as that value. On PostgreSQL
    through the GIN index on span attributes (``@>``, rumserver migration 0008), the
    applications tested above an ``OFFSET 0`` fence: named beside the attributes,
    without statistics, the (app, start) index won and read every span of the
    application."""
    values = _attribute_values(value)
    if connection.vendor == "postgresql":
        # One containment a branch: their OR was planned as a scan of every span.
        contains = " UNION ALL ".join(
            [
                f"(SELECT app_id, trace_id FROM {Span._meta.db_table} "
                "WHERE attributes @> %s::jsonb OFFSET 0)"
            ]
            * len(values)
        )
        matching = RawSQL(
            f"SELECT x.trace_id FROM ({contains}) AS x WHERE x.app_id = ANY(%s)",
            [*(json.dumps({key: v}) for v in values), app_ids],
        )
        return traces.filter(trace_id__in=matching)
    # SQLite has no JSON containment (and small tables): the key's value.
    spans = Span.objects.filter(app__in=app_ids).annotate(
        attr_value=KeyTransform(key, "attributes")
    )
    return traces.filter(trace_id__in=spans.filter(attr_value__in=values).values("trace_id"))


def _attribute_traces(
    tables: list[str], key: str, values: list[Any], app_ids: list[int]
) -> set[tuple[int, str]]:
    """(application, trace id) of the spans of ``app_ids`` in ``tables`` (day
    partitions of the span table) whose attribute ``key`` is one of ``values``: each
    table's GIN index, the applications tested above the ``OFFSET 0`` fence
    (``_with_attribute``)."""
    quote = connection.ops.quote_name
    branches = [
        f"(SELECT app_id, trace_id FROM {quote(table)} WHERE attributes @> %s::jsonb OFFSET 0)"
        for table in tables
        for _ in values
    ]
    if not branches:
        return set()
    params = [json.dumps({key: v}) for _ in tables for v in values]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT x.app_id, x.trace_id FROM ({' UNION ALL '.join(branches)}) AS x "
            "WHERE x.app_id = ANY(%s)",
            [*params, app_ids],
        )
        return {(app_id, trace_id) for app_id, trace_id in cursor.fetchall()}


def _trace_pks(keys: list[tuple[int, str]]) -> list[int]:
    """The stitched traces of these (application, trace id) keys, one probe of the
    unique key each (joined, without statistics, PostgreSQL hashed every trace)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.id FROM unnest(%s::bigint[], %s::text[]) AS k(app_id, trace_id) "
            f"CROSS JOIN LATERAL (SELECT id FROM {Trace._meta.db_table} "
            "WHERE app_id = k.app_id AND trace_id = k.trace_id LIMIT 1) AS t",
            [[app for app, _ in keys], [trace_id for _, trace_id in keys]],
        )
        return [pk for (pk,) in cursor.fetchall()]


# Traces a read of the candidates names by primary key: few enough that, without
# statistics, the planner expects fewer rows from the keys than from the application
# (a five-hundredth of the table) and probes the keys.
ATTR_TRACES_READ = 100


def _newest_with_attribute(
    listed: Callable[[list[int] | None], QuerySet[Trace]],
    key: str,
    value: str,
    app_ids: list[int],
    *,
    limit: int,
) -> list[Trace] | None:
    """The first ``limit`` of ``listed()`` (the trace list, newest first; ``listed(pks)``
    those of the keys that are in it) with a span whose attribute
    ``key`` is ``value``, read from the span table's day partitions newest first and
    stopping once the page is known: a rare attribute of a month of spans (11,000
    spans of 10 million) took 340 ms read from every day at once, most of it for
    matches pages further on. None where the span table has no day partitions
    (SQLite): ``_with_attribute`` then.

    A trace's order is its start, a span's partition its own start. A trace's spans
    start within ``WINDOW_SLACK_MS`` of its start (the stitch's own window: a browser
    clock up to ``MAX_SKEW_MS`` off, an hour more), so once the days from ``lo`` on
    have been read, a trace not found yet starts before ``lo + WINDOW_SLACK_MS``, and
    every trace found that starts from there on is in its final place. Reads, each
    one statement: the default partition (strays: days without a partition of their
    own) with the days from the newest trace's start plus the slack down to the
    slack and a day below it; then down to where the page's last trace found so far
    would be placed (or, with less than a page found, twice as far as read so far);
    never below the oldest trace's start less the slack, where no span of the list's
    traces can lie. Each candidate trace once, by key, with the list's filters."""
    if connection.vendor != "postgresql":
        return None
    spec = partitions.BY_TABLE[Span._meta.db_table]
    with connection.cursor() as cursor:
        if not partitions.is_partitioned(cursor, spec.table):
            return None
        days = partitions.day_partitions(cursor, spec)
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [spec.default_table])
        strays = [spec.default_table] if cursor.fetchone()[0] else []
    traces = listed(None)
    newest = traces.values_list("start_ms", flat=True).first()
    oldest = traces.order_by("start_ms", "id").values_list("start_ms", flat=True).first()
    if newest is None or oldest is None:
        return []

    def day_ms(day: Any) -> float:
        return spec.bound(day) / 1e6

    # The days a candidate's span can lie in, newest first.
    day = partitions.MS_PER_DAY
    hi, floor = newest + WINDOW_SLACK_MS, oldest - WINDOW_SLACK_MS
    wanted = [
        (day_ms(d), table)
        for d, table in sorted(days.items(), reverse=True)
        if day_ms(d) < hi and day_ms(d) + day > floor
    ]
    # First down to where the newest trace within the days there are (not a stray
    # of next year's, in the default partition) would be placed, and a day more.
    top = traces.filter(start_ms__lt=wanted[0][0] + day) if wanted else traces.none()
    newest_placed = top.values_list("start_ms", flat=True).first()
    down_to = floor if newest_placed is None else newest_placed - WINDOW_SLACK_MS - day
    read_from = wanted[0][0] + day if wanted else down_to
    values = _attribute_values(value)
    pending = strays
    found: dict[int, Trace] = {}
    read: set[tuple[int, str]] = set()
    while True:
        batch = [(start, table) for start, table in wanted if start + day > down_to]
        wanted = wanted[len(batch) :]
        keys = sorted(_attribute_traces(pending + [t for _, t in batch], key, values, app_ids))
        pks = _trace_pks([k for k in keys if k not in read])
        read.update(keys)
        for at in range(0, len(pks), ATTR_TRACES_READ):
            # Those of the list's filters, by primary key (unordered: not along the
            # (app, start) index; without the turns, joined here by a hash of every
            # turn without statistics: the page reads its own).
            chunk = listed(pks[at : at + ATTR_TRACES_READ])
            for trace in chunk.select_related(None).order_by():
                found[trace.pk] = trace
        ordered = sorted(found.values(), key=lambda t: (t.start_ms, t.pk), reverse=True)
        if not wanted:
            return ordered[:limit]
        # Every span from lo on is read: a trace not found yet starts before lo + slack.
        lo = batch[-1][0] if batch else wanted[0][0] + day
        placed = [t for t in ordered if t.start_ms >= lo + WINDOW_SLACK_MS]
        if len(placed) >= limit:
            return placed[:limit]
        # Next, down to where the page's last trace found so far would be placed,
        # or twice as far as read so far when fewer than a page are found.
        if len(ordered) >= limit:
            down_to = min(lo - day, ordered[limit - 1].start_ms - WINDOW_SLACK_MS)
        else:
            down_to = lo - max(day, read_from - lo)
        pending = []


def _app_ids(user: AbstractBaseUser | AnonymousUser, app: Application | None) -> list[int]:
    return (
        [app.pk]
        if app is not None
        else list(visible_applications(user).values_list("pk", flat=True))
    )


def trace_page(
    *,
    user: AbstractBaseUser | AnonymousUser,
    app: Application | None = None,
    before: tuple[float, int] | None = None,
    limit: int,
    **filters: Any,
) -> list[Trace]:
    """One page of ``trace_list`` (the same filters), newest first: the first ``limit``
    traces after ``before``, the (start, id) of the previous page's last one. By a span
    attribute on PostgreSQL, from the newest day partitions on (``_newest_with_attribute``)."""
    attr = filters.pop("attr", None)

    def listed(pks: list[int] | None = None) -> QuerySet[Trace]:
        traces = trace_list(user=user, app=app, pks=pks, **filters)
        if before is not None:
            start, pk = before
            traces = traces.filter(Q(start_ms__lt=start) | Q(start_ms=start, id__lt=pk))
        return traces

    traces = listed()
    if attr is not None:
        app_ids = _app_ids(user, app)
        page = _newest_with_attribute(listed, attr[0], attr[1], app_ids, limit=limit)
        if page is not None:
            return page
        traces = _with_attribute(traces, attr[0], attr[1], app_ids)
    return list(traces[:limit])


def trace_list(
    *,
    user: AbstractBaseUser | AnonymousUser,
    app: Application | None = None,
    q: str | None = None,
    outcome: str | None = None,
    model: str | None = None,
    browser: str | None = None,
    os: str | None = None,
    device: str | None = None,
    min_client_ttft_ms: float | None = None,
    score: str | None = None,
    attr: tuple[str, str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    pks: list[int] | None = None,
) -> QuerySet[Trace]:
    """Newest first by the trace's start (the browser span's skew-corrected send time,
    else its earliest span); every state and outcome unless filtered. ``app`` is one
    the caller has found among the user's (``visible_applications``); a filter left
    at None does not filter. ``q`` is a trace, session, conversation or user id;
    ``score`` a score name the trace carries; ``attr`` (key, value) of a span
    attribute; ``browser``, ``os`` and ``device`` are the turn's session's. ``pks``:
    those of these traces (found in the applications already) that pass the filters,
    read by key alone (beside ``app_id``, without statistics, PostgreSQL read the
    application's (app, start) index too)."""
    visible = visible_applications(user)
    traces = Trace.objects.filter(app__in=visible) if pks is None else Trace.objects.all()
    # The searches' subqueries name the application by id where it is known, for
    # the same reason as below.
    apps: Any = [app.pk] if app is not None else visible
    if pks is not None:
        traces = traces.filter(pk__in=pks)
    elif app is not None:
        # By id, not through a join on the slug: the join made PostgreSQL sort every
        # trace of the application instead of reading the (app, start) index
        # backwards (1.3 s against under 1 ms with 2 million traces).
        traces = traces.filter(app_id=app.pk)
    if q:
        traces = _searched(traces, q, apps)
    by_turn = {
        key: value
        for key, value in (
            ("outcome", outcome),
            ("model", model),
            ("session__browser", browser),
            ("session__os", os),
            ("session__device_class", device),
            ("client_ttft_ms__gte", min_client_ttft_ms),
        )
        if value is not None and value != ""
    }
    if by_turn:
        # The traces whose turn passes, as a semi-join on the trace id: joined by the
        # turn's whole key (trace, send = start) PostgreSQL estimated one row from the
        # two conditions' product and hashed every matching turn against every trace
        # of the application (2.8 s at 2.5 M turns, bench/reports), where the semi-join
        # walks the (app, start) index newest first and stops at the page. The same
        # time bounds on the turns keep the partitions planned to the range's days.
        turns = Turn.objects.filter(app_id__in=apps, **by_turn)
        if since:
            turns = turns.filter(t_send_ms__gte=since.timestamp() * 1000)
        if until:
            turns = turns.filter(t_send_ms__lt=until.timestamp() * 1000)
        traces = traces.filter(pk__in=turns.values("trace_id"))
    if score:
        named = Score.objects.filter(app__in=apps, name=score)
        traces = traces.filter(trace_id__in=named.values("trace_id"))
    if attr is not None:
        traces = _with_attribute(traces, attr[0], attr[1], _app_ids(user, app))
    if since:
        traces = traces.filter(start_ms__gte=since.timestamp() * 1000)
    if until:
        traces = traces.filter(start_ms__lt=until.timestamp() * 1000)
    # Without the turns: a page's are read by ``with_turns``. Joined here, without
    # statistics and with day partitions of turns, PostgreSQL costs a probe of every
    # partition a trace (it cannot know that run-time pruning leaves one) and hashed
    # every turn instead (tests/correlator/test_query_plans.py).
    return traces.select_related("app").order_by("-start_ms", "-id")


def with_turns(traces: list[Trace], *, sessions: bool = False) -> list[Trace]:
    """The traces, each with its turn (or None) read, as ``trace.turn`` gives them,
    and (``sessions``) the turn's session as ``turn.session`` does: on PostgreSQL one probe of the turns' unique key a trace,
    ``(trace_id, t_send_ms = trace.start_ms)`` (correlator.models.TraceOfTurn), in the
    one day partition of that start, whatever the statistics say. The page's first and
    last start bound them all too, so that only the partitions of the page's days are
    planned (planning a probe of each of 72 days took 35 ms, the reads 1 ms)."""
    if not traces:
        return traces
    if connection.vendor == "postgresql":
        columns = ", ".join(f"x.{f.column}" for f in Turn._meta.concrete_fields)
        turns = list(
            Turn.objects.raw(
                f"SELECT {columns} FROM unnest(%s::bigint[], %s::float8[]) AS k(id, start_ms) "
                f"CROSS JOIN LATERAL (SELECT * FROM {Turn._meta.db_table} "
                "WHERE trace_id = k.id AND t_send_ms = k.start_ms "
                "AND t_send_ms >= %s AND t_send_ms <= %s OFFSET 0) AS x LIMIT %s",
                [
                    [t.pk for t in traces],
                    [t.start_ms for t in traces],
                    min(t.start_ms for t in traces),
                    max(t.start_ms for t in traces),
                    len(traces),
                ],
            )
        )
    else:
        turns = list(Turn.objects.filter(trace__in=[t.pk for t in traces])[: len(traces)])
    by_pk: dict[int, BrowserSession] = {}
    if sessions and turns:
        keys = sorted({t.session_id for t in turns})
        by_pk = {s.pk: s for s in BrowserSession.objects.filter(pk__in=keys)[: len(keys)]}
    by_trace = {turn.trace_id: turn for turn in turns}
    for trace in traces:
        turn = by_trace.get(trace.pk)
        if turn is not None:
            Turn.trace.field.set_cached_value(turn, trace)
            if turn.session_id in by_pk:
                Turn.session.field.set_cached_value(turn, by_pk[turn.session_id])
        Trace.turn.related.set_cached_value(trace, turn)
    return traces


class SessionCounts(NamedTuple):
    turns: int
    conversations: int
    abandoned: int


def session_list(
    *,
    app: Application,
    since: datetime,
    until: datetime,
    before: tuple[datetime, int] | None = None,
    limit: int,
) -> list[BrowserSession]:
    """An application's sessions last seen in [since, until), the most recently seen
    first, from the (app, last seen, id) index; ``before`` is the (last seen, id) of
    the previous page's last row."""
    sessions = BrowserSession.objects.filter(
        app_id=app.pk, last_seen_at__gte=since, last_seen_at__lt=until
    )
    if before is not None:
        seen, pk = before
        sessions = sessions.filter(Q(last_seen_at__lt=seen) | Q(last_seen_at=seen, id__lt=pk))
    return list(sessions.order_by("-last_seen_at", "-id")[:limit])


def session_counts(*, session_pks: list[int]) -> dict[int, SessionCounts]:
    """session pk -> its turns, conversations and abandoned turns (sessions with
    none are left out), through the turns' session index, probed once a session
    (as an IN list, without statistics, PostgreSQL read every turn)."""
    if not session_pks:
        return {}
    if connection.vendor != "postgresql":
        rows = (
            Turn.objects.filter(session_id__in=session_pks)
            .values("session_id")
            .annotate(
                turns=Count("id"),
                conversations=Count(
                    "conversation_id", distinct=True, filter=~Q(conversation_id="")
                ),
                abandoned=Count("id", filter=Q(outcome="abandoned")),
            )
            .order_by()
            .values_list("session_id", "turns", "conversations", "abandoned")
        )
    else:
        with connection.cursor() as cursor:
            cursor.execute(
                f"""SELECT k.id, x.turns, x.conversations, x.abandoned
                    FROM unnest(%s::bigint[]) AS k(id)
                    CROSS JOIN LATERAL (
                        SELECT count(*) AS turns,
                               count(DISTINCT conversation_id)
                                   FILTER (WHERE conversation_id <> '') AS conversations,
                               count(*) FILTER (WHERE outcome = 'abandoned') AS abandoned
                        FROM {Turn._meta.db_table} WHERE session_id = k.id
                    ) AS x
                    WHERE x.turns > 0""",
                [sorted(set(session_pks))],
            )
            rows = cursor.fetchall()
    return {pk: SessionCounts(*counts) for pk, *counts in rows}


# --- many keys at once, as index probes ------------------------------------------------


class OpeningRow(NamedTuple):
    span_id: str
    t_send_ms: float
    regenerated: bool
    intent_correction: bool


def trace_starts(*, app_id: int, trace_ids: list[str]) -> dict[str, float]:
    """trace id -> the stitched trace's start (epoch ms), for those stitched before."""
    if not trace_ids:
        return {}
    if connection.vendor != "postgresql":
        rows = Trace.objects.filter(app_id=app_id, trace_id__in=trace_ids)
        return dict(rows.values_list("trace_id", "start_ms"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT t.trace_id, t.start_ms FROM unnest(%s::text[]) AS k(trace_id) "
            f"JOIN {Trace._meta.db_table} t ON t.app_id = %s AND t.trace_id = k.trace_id",
            [sorted(set(trace_ids)), app_id],
        )
        return dict(cursor.fetchall())


def conversation_openers(*, app_id: int, conversations: list[str]) -> dict[str, list[OpeningRow]]:
    """conversation id -> its first two turns by send time (fewer if it has fewer),
    read from the day partitions within the send times the conversation spans
    (``Conversation``; the others are pruned as each probe runs) through the
    (conversation, app, send) index.

    The probe names the conversation and the send times but not the application
    (kept after it, behind OFFSET 0): naming it, partitions never analysed gave both
    indexes one row, and PostgreSQL took the (app, send) index, reading every turn of
    the application within the span (a day's when the conversation spans a day)."""
    if not conversations:
        return {}
    out: dict[str, list[OpeningRow]] = defaultdict(list)
    wanted = sorted(set(conversations))
    if connection.vendor != "postgresql":
        for start in range(0, len(wanted), 500):
            rows = Turn.objects.filter(
                app_id=app_id, conversation_id__in=wanted[start : start + 500]
            ).order_by("conversation_id", "t_send_ms", "span_id")
            for conversation, *row in rows.values_list("conversation_id", *OpeningRow._fields):
                if len(out[conversation]) < 2:
                    out[conversation].append(OpeningRow(*row))
        return dict(out)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT k.conversation_id, x.span_id, x.t_send_ms, x.regenerated,
                       x.intent_correction
                FROM unnest(%s::text[]) AS k(conversation_id)
                CROSS JOIN LATERAL (
                    SELECT first_send_ms, last_send_ms FROM {Conversation._meta.db_table}
                    WHERE app_id = %s AND conversation_id = k.conversation_id OFFSET 0
                ) AS s
                CROSS JOIN LATERAL (
                    SELECT span_id, t_send_ms, regenerated, intent_correction FROM (
                        SELECT app_id, span_id, t_send_ms, regenerated, intent_correction
                        FROM {Turn._meta.db_table}
                        WHERE conversation_id = k.conversation_id
                          AND t_send_ms >= s.first_send_ms AND t_send_ms <= s.last_send_ms
                        OFFSET 0
                    ) AS y
                    WHERE app_id = %s
                    ORDER BY t_send_ms, span_id LIMIT 2
                ) AS x
                ORDER BY k.conversation_id, x.t_send_ms, x.span_id""",
            [wanted, app_id, app_id],
        )
        for conversation, *row in cursor.fetchall():
            out[conversation].append(OpeningRow(*row))
    return dict(out)


def regenerated_span_ids(*, sent: dict[str, float]) -> set[tuple[int, str]]:
    """(app id, span id) of those turns that a stitched turn regenerates, through the
    partial index on ``regenerate_of`` (an ``IN`` list here was a scan of every turn
    per batch once the table had outgrown its statistics). ``sent``: span id -> the
    turn's send time on its browser's clock (0 when unknown).

    A regeneration is sent later, from the same page: on that browser's clock after
    the turn, and stored at most ``MAX_SKEW_MS`` from it (a larger skew is not
    applied), so only turns sent from ``WINDOW_SLACK_MS`` before the turn are probed:
    the day partitions before are pruned as each probe runs (turns are day
    partitions by send time; by the span id alone each probe descended every day's
    index), and before the batch's earliest such time as PostgreSQL plans (a constant:
    by each probe's bound alone it planned every day partition, each batch)."""
    if not sent:
        return set()
    wanted = sorted(sent.items())
    if connection.vendor != "postgresql":
        found: set[tuple[int, str]] = set()
        for start in range(0, len(wanted), 500):
            chunk = dict(wanted[start : start + 500])
            rows = Turn.objects.filter(regenerate_of__in=list(chunk)).exclude(regenerate_of="")
            for app_id, span_id, at in rows.values_list("app_id", "regenerate_of", "t_send_ms"):
                if at >= chunk[span_id] - WINDOW_SLACK_MS:
                    found.add((app_id, span_id))
        return found
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT x.app_id, k.span_id
                FROM unnest(%s::text[], %s::float8[]) AS k(span_id, sent_ms)
                CROSS JOIN LATERAL (
                    SELECT app_id FROM {Turn._meta.db_table}
                    WHERE regenerate_of = k.span_id AND regenerate_of <> ''
                      AND t_send_ms >= k.sent_ms - {WINDOW_SLACK_MS}
                      AND t_send_ms >= %s
                    OFFSET 0  -- a fence: flattened into a join, it became a hash join on a scan
                ) AS x""",
            [
                [span for span, _ in wanted],
                [ms for _, ms in wanted],
                min(ms for _, ms in wanted) - WINDOW_SLACK_MS,
            ],
        )
        return set(cursor.fetchall())


def feedback_events(
    *, app_id: int, span_ids: set[str], since_ms: float | None = None
) -> list[tuple[str, str, str, Any]]:
    """(type, name, turn span id, data) of the feedback and action events about these
    turns, through the partial (app, turn span) index, probed once a span id (as an IN
    list of a few hundred, PostgreSQL read every event of the application).
    ``since_ms``: the turns' earliest send time (server clock): feedback comes after
    its turn, so the day partitions before it (less a browser clock's slack) are not
    read; every day kept would be a probe of its own index."""
    if not span_ids:
        return []
    after = -(2.0**62) if since_ms is None else since_ms - WINDOW_SLACK_MS
    kinds = [BrowserEvent.Type.FEEDBACK.value, BrowserEvent.Type.ACTION.value]
    if connection.vendor != "postgresql":
        # The exclude repeats the partial index's condition so the planner may use it.
        events = BrowserEvent.objects.filter(
            app_id=app_id, turn_span_id__in=span_ids, type__in=kinds, ts_ms__gte=after
        ).exclude(turn_span_id="")
        return list(events.values_list("type", "name", "turn_span_id", "data"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT x.type, x.name, k.span_id, x.data FROM unnest(%s::text[]) AS k(span_id)
                CROSS JOIN LATERAL (
                    SELECT type, name, data FROM {BrowserEvent._meta.db_table}
                    WHERE app_id = %s AND turn_span_id = k.span_id AND turn_span_id <> ''
                      AND type = ANY(%s) AND ts_ms >= %s
                    OFFSET 0
                ) AS x""",
            [sorted(span_ids), app_id, kinds, after],
        )
        return [
            (kind, name, span_id, json.loads(data) if isinstance(data, str) else data)
            for kind, name, span_id, data in cursor.fetchall()
        ]


def hallucination_scores(*, app_id: int, trace_ids: set[str]) -> list[tuple[str, datetime, float]]:
    """(trace id, received at, value) of these traces' ``hallucination`` scores: a
    probe of the trace id index a trace, the application tested above the fence (else
    the smaller (app, received) index won: every score of the application read)."""
    if not trace_ids:
        return []
    if connection.vendor != "postgresql":
        scores = Score.objects.filter(app_id=app_id, name="hallucination", trace_id__in=trace_ids)
        return list(scores.values_list("trace_id", "received_at", "value"))
    # The ids as one array parameter: a rollup rebuild asks for tens of thousands, and
    # an IN list of them was a fifth of it, building and parsing the SQL.
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT k.trace_id, x.received_at, x.value FROM unnest(%s::text[]) AS k(trace_id)
                CROSS JOIN LATERAL (
                    SELECT app_id, received_at, value FROM {Score._meta.db_table}
                    WHERE trace_id = k.trace_id AND name = 'hallucination' OFFSET 0
                ) AS x
                WHERE x.app_id = %s""",
            [sorted(trace_ids), app_id],
        )
        rows: list[tuple[str, datetime, float]] = cursor.fetchall()
        return rows
