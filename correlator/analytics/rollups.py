"""Rollups: turn figures per application and minute (and by model, browser, OS and
device class), merged upwards into hours and days, so the metrics API and the
overview answer for months of data without reading raw turns.

How they stay right:
- Every stitch batch marks the minutes it touched dirty (the turns' old and new
  send minutes, and the minute where each of their conversations began), in the
  batch's own transaction.
- ``rollups_refresh`` claims dirty periods with ``FOR UPDATE SKIP LOCKED`` and
  REBUILDS them (a minute from its turns, an hour from its minutes, a day from
  its hours) instead of adding increments: rebuilding twice gives the same rows,
  so a retried or concurrent sweep never counts a turn twice.
- Counts are exact; percentiles come from fixed-bucket histograms (within 1 %),
  distinct sessions and conversations from HyperLogLog (``analytics.sketches``).

This module builds them; ``analytics.windows`` reads them for a time window.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import msgspec
from django.db import connection, transaction
from django.db.models import Model, Q, QuerySet, TextField
from django.db.models.functions import Cast

from correlator.analytics.exact import (
    DURATIONS,
    HALLUCINATION_THRESHOLD,
    QUANTILES,
    TURN_COLUMNS,
    TurnRow,
    cost_figures,
    first_responses,
    latest_hallucination,
    rate,
)
from correlator.analytics.sketches import (
    HyperLogLog,
    LogHistogram,
    PackedHistogram,
    PackedHll,
    bucket_of,
)
from correlator.bulk import columns_of, encode_json, record_of, recordset_of
from correlator.models import DirtyRollup, Rollup, Trace, Turn
from correlator.stitch.load import load_batch
from correlator.stitch.rules import server_only_metrics
from rumserver.models import DirtyEventRollup
from rumserver.roles import role_in_trace
from rumserver.sql import commit_without_waiting_for_disk

MINUTE, HOUR, DAY = Rollup.Period.MINUTE, Rollup.Period.HOUR, Rollup.Period.DAY
# Keyed by plain str: periods read back from the database are strings, not Period members.
LENGTH: dict[str, timedelta] = {
    MINUTE: timedelta(minutes=1),
    HOUR: timedelta(hours=1),
    DAY: timedelta(days=1),
}
PARENT: dict[str, str] = {MINUTE: HOUR, HOUR: DAY}
CHILD: dict[str, str] = {HOUR: MINUTE, DAY: HOUR}
# Dimension -> the column of the turn row it splits by ("" is the whole application).
DIMENSIONS = ("", "model", "browser", "os", "device")
# Traces with server spans and no browser root (API clients), by model: rows of their
# own, with no turns, counting ``server_only_traces`` and the entry's server TTFT.
SERVER_ONLY = "server_only"
COUNTS = (
    "turns",
    "stopped",
    "abandoned",
    "abandoned_before_first_token",
    "errors",
    "regenerations",
    "intent_corrections",
    "input_tokens",
    "output_tokens",
    "conversations_started",
    "first_responses_good",
    "scored_turns",
    "hallucinated_turns",
    "linked_turns",
    "server_only_traces",
    "cost_nano_usd",
    "unpriced_turns",
)
BATCH_SIZE = 500
_decode = msgspec.json.Decoder(dict).decode


def floor(moment: datetime, period: str) -> datetime:
    moment = moment.astimezone(UTC)
    if period == MINUTE:
        return moment.replace(second=0, microsecond=0)
    if period == HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def ceil(moment: datetime, period: str) -> datetime:
    down = floor(moment, period)
    return down if down == moment else down + LENGTH[period]


def minute_of(epoch_ms: float) -> datetime:
    return floor(datetime.fromtimestamp(epoch_ms / 1000, UTC), MINUTE)


# -- accumulating ------------------------------------------------------------------


class TurnFacts(NamedTuple):
    """One turn with everything a rollup counts about it."""

    row: TurnRow
    groups: dict[str, str]  # dimension -> key
    linked: bool
    unlinked_cause: str
    first_response: bool | None  # None: not the first turn of its conversation
    hallucination: float | None
    # Computed once and added to every dimension's accumulator: the counts this turn
    # adds (only those it changes), its sketch positions and hashes.
    increments: tuple[tuple[str, int], ...]
    buckets: tuple[tuple[str, int], ...]
    session_hash: int
    conversation_hash: int


def increments_of(
    t: TurnRow, *, first_response: bool | None, hallucination: float | None, linked: bool
) -> tuple[tuple[str, int], ...]:
    """(count, amount) of the ``COUNTS`` one turn adds to, amounts not zero."""
    adds = [("turns", 1)]
    if t.outcome in _OUTCOME_COUNTS:
        adds.append((_OUTCOME_COUNTS[t.outcome], 1))
        if t.outcome == "abandoned" and t.client_ttft_ms is None:
            adds.append(("abandoned_before_first_token", 1))
    if t.regenerate_of:
        adds.append(("regenerations", 1))
    if t.intent_correction:
        adds.append(("intent_corrections", 1))
    if t.input_tokens:
        adds.append(("input_tokens", t.input_tokens))
    if t.output_tokens:
        adds.append(("output_tokens", t.output_tokens))
    if first_response is not None:
        adds.append(("conversations_started", 1))
        if first_response:
            adds.append(("first_responses_good", 1))
    if hallucination is not None:
        adds.append(("scored_turns", 1))
        if hallucination >= HALLUCINATION_THRESHOLD:
            adds.append(("hallucinated_turns", 1))
    if linked:
        adds.append(("linked_turns", 1))
    if t.cost_nano_usd is None:
        adds.append(("unpriced_turns", 1))
    elif t.cost_nano_usd:
        adds.append(("cost_nano_usd", t.cost_nano_usd))
    return tuple(adds)


_OUTCOME_COUNTS = {"stopped": "stopped", "abandoned": "abandoned", "error": "errors"}


@dataclass
class Accumulator:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    histograms: dict[str, LogHistogram] = field(
        default_factory=lambda: {name: LogHistogram() for name in DURATIONS}
    )
    sessions: HyperLogLog = field(default_factory=HyperLogLog)
    conversations: HyperLogLog = field(default_factory=HyperLogLog)
    unlinked: dict[str, int] = field(default_factory=dict)

    def add_all(self, many: Iterable[TurnFacts]) -> None:
        # A rebuild adds every turn once for each of five dimensions: one loop with
        # its lookups hoisted, adding only what each turn changes.
        counts, unlinked = self.counts, self.unlinked
        histograms = {name: h.counts for name, h in self.histograms.items()}
        add_session, add_conversation = self.sessions.add_hash, self.conversations.add_hash
        for facts in many:
            for name, n in facts.increments:
                counts[name] += n
            if facts.unlinked_cause:
                unlinked[facts.unlinked_cause] = unlinked.get(facts.unlinked_cause, 0) + 1
            for name, index in facts.buckets:
                buckets = histograms[name]
                buckets[index] = buckets.get(index, 0) + 1
            add_session(facts.session_hash)
            add_conversation(facts.conversation_hash)

    def merge(self, *, counts: Sequence[int], sketches: dict[str, Any]) -> None:
        """Add a stored row: its ``COUNTS`` in order, and its sketches."""
        for name, n in zip(COUNTS, counts, strict=True):
            self.counts[name] += n
        for name, histogram in self.histograms.items():
            histogram.merge_flat(sketches.get(name, []))
        self.sessions.merge_json(sketches.get("sessions", {}))
        self.conversations.merge_json(sketches.get("conversations", {}))
        for cause, n in sketches.get("unlinked", {}).items():
            self.unlinked[cause] = self.unlinked.get(cause, 0) + n

    def merge_packed(self, *, counts: Sequence[int], packed: PackedRow) -> None:
        """``merge`` of a row read by ``read_rows``: the same result, from big-integer
        additions and maxima instead of a Python step per bucket and hash."""
        for name, n in zip(COUNTS, counts, strict=True):
            self.counts[name] += n
        for name, histogram in self.histograms.items():
            histogram.merge_packed(packed.histograms[name])
        self.sessions.merge_packed(packed.sessions)
        self.conversations.merge_packed(packed.conversations)
        for cause, n in packed.unlinked.items():
            self.unlinked[cause] = self.unlinked.get(cause, 0) + n

    def to_row(
        self, *, app_id: int, period: str, start: datetime, dimension: str, key: str, now: datetime
    ) -> Rollup:
        sketches: dict[str, Any] = {name: h.to_flat() for name, h in self.histograms.items()}
        sketches["sessions"] = self.sessions.to_json()
        sketches["conversations"] = self.conversations.to_json()
        sketches["unlinked"] = dict(sorted(self.unlinked.items()))
        return Rollup(
            app_id=app_id,
            period=period,
            start=start,
            dimension=dimension,
            key=key,
            sketches=sketches,
            computed_at=now,
            **self.counts,
        )

    def figures(self) -> dict[str, Any]:
        """The same fields as ``exact.summarize``."""
        c = self.counts
        n = c["turns"]
        sessions, conversations = self.sessions.estimate(), self.conversations.estimate()
        out: dict[str, Any] = {"turns": n, "sessions": sessions, "conversations": conversations}
        for name, histogram in self.histograms.items():
            out[name] = {label: histogram.quantile(q) for label, q in QUANTILES.items()}
        out["input_tokens"] = c["input_tokens"]
        out["output_tokens"] = c["output_tokens"]
        out.update(cost_figures(c["cost_nano_usd"], c["unpriced_turns"]))
        out["turns_per_session"] = rate(n, sessions)
        out["intent_corrections_per_conversation"] = rate(c["intent_corrections"], conversations)
        out["rates"] = {
            "stop_rate": rate(c["stopped"], n),
            "regenerate_rate": rate(c["regenerations"], n),
            "abandonment_rate": rate(c["abandoned"], n),
            "abandonment_before_first_token_rate": rate(c["abandoned_before_first_token"], n),
            "error_rate": rate(c["errors"], n),
            "first_response_accuracy": rate(c["first_responses_good"], c["conversations_started"]),
            "hallucination_rate": rate(c["hallucinated_turns"], c["scored_turns"]),
        }
        return out


# A turn row's columns, then what a rollup splits and counts by.
_FACT_COLUMNS = [
    *TURN_COLUMNS,
    "model",
    "session__browser",
    "session__os",
    "session__device_class",
    "trace__linked",
    "trace__propagation_cause",
]


def _sent_within(ranges: Iterable[tuple[datetime, datetime]], column: str = "t_send_ms") -> Q:
    within = Q()
    for lo, hi in ranges:
        within |= Q(
            **{f"{column}__gte": lo.timestamp() * 1000, f"{column}__lt": hi.timestamp() * 1000}
        )
    return within


def _merged(starts: Iterable[datetime], length: timedelta) -> list[tuple[datetime, datetime]]:
    """Adjacent periods as one range: fewer OR terms in the query."""
    return untagged(joined([("", start, start + length) for start in sorted(set(starts))]))


def untagged(ranges: list[tuple[str, datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    return [(lo, hi) for _, lo, hi in ranges]


def joined(ranges: list[tuple[str, datetime, datetime]]) -> list[tuple[str, datetime, datetime]]:
    """Adjacent ranges of one period as one (sorted input)."""
    out: list[tuple[str, datetime, datetime]] = []
    for period, lo, hi in ranges:
        if out and out[-1][0] == period and out[-1][2] == lo:
            out[-1] = (period, out[-1][1], hi)
        else:
            out.append((period, lo, hi))
    return out


def turn_facts(*, app_id: int, ranges: list[tuple[datetime, datetime]]) -> list[TurnFacts]:
    """The turns sent within these [from, to) ranges, with what rollups count about them."""
    if not ranges:
        return []
    rows = list(
        Turn.objects.filter(_sent_within(ranges), app_id=app_id).values_list(*_FACT_COLUMNS)
    )
    if not rows:
        return []
    width = len(TURN_COLUMNS)
    turns = [TurnRow(*row[:width]) for row in rows]
    openers = first_responses(app=app_id, turns=turns)
    scores = latest_hallucination(app=app_id, trace_ids={t.trace_id for t in turns})
    facts = []
    for turn, row in zip(turns, rows, strict=True):
        model, browser, os_name, device, linked, cause = row[width:]
        first_response, hallucination = openers.get(turn.span_id), scores.get(turn.trace_id)
        facts.append(
            TurnFacts(
                row=turn,
                groups={"model": model, "browser": browser, "os": os_name, "device": device},
                linked=linked,
                unlinked_cause=(cause or "not_descending") if not linked else "",
                first_response=first_response,
                hallucination=hallucination,
                increments=increments_of(
                    turn,
                    first_response=first_response,
                    hallucination=hallucination,
                    linked=linked,
                ),
                buckets=tuple(
                    (name, bucket_of(value))
                    for name, column in DURATIONS.items()
                    if (value := getattr(turn, column)) is not None
                ),
                session_hash=HyperLogLog.hash_of(str(turn.session)),
                conversation_hash=HyperLogLog.hash_of(turn.conversation),
            )
        )
    return facts


def accumulate(
    facts: Iterable[TurnFacts],
    dimensions: Iterable[str] = DIMENSIONS,
    into: dict[tuple[str, str], Accumulator] | None = None,
) -> dict[tuple[str, str], Accumulator]:
    """(dimension, key) -> accumulator over these turns."""
    out = into if into is not None else {}
    for group, members in _grouped(facts, tuple(dimensions)).items():
        acc = out.get(group)
        if acc is None:
            acc = out[group] = Accumulator()
        acc.add_all(members)
    return out


def _grouped(
    facts: Iterable[TurnFacts], dimensions: tuple[str, ...], minute: bool = False
) -> dict[tuple[Any, ...], list[TurnFacts]]:
    """(dimension, key) -> its turns, or (minute, dimension, key) with ``minute``."""
    groups: dict[tuple[Any, ...], list[TurnFacts]] = defaultdict(list)
    for fact in facts:
        at = (minute_of(fact.row.t_send_ms),) if minute else ()
        for dimension in dimensions:
            groups[(*at, dimension, fact.groups[dimension] if dimension else "")].append(fact)
    return groups


# -- rebuilding ----------------------------------------------------------------------


# The dirty marks of the turns' rollups, or of the vitals and errors pages' ones
# (``analytics.event_rollups``): both are refreshed by the code below.
Dirty = type[DirtyRollup] | type[DirtyEventRollup]
Rebuild = Callable[..., None]  # (*, app_id, period, starts, now)


def rollups_mark(
    marks: Iterable[tuple[int, str, datetime]], *, now: datetime, dirty: Dirty = DirtyRollup
) -> None:
    """Mark (app id, period, start) dirty in the caller's transaction. Sorted, so
    concurrent sweeps lock rows in one order; an upsert, so a mark made while a
    rebuild holds the row waits for it and survives its delete."""
    rows: list[Any] = [
        dirty(app_id=app_id, period=period, start=start, first_marked_at=now, last_marked_at=now)
        for app_id, period, start in sorted(set(marks))
    ]
    if rows:
        dirty.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["app", "period", "start"],
            update_fields=["last_marked_at"],
        )


def rollups_refresh(
    *,
    now: datetime,
    batch_size: int = BATCH_SIZE,
    settle_seconds: float = 0.0,
    dirty: Dirty = DirtyRollup,
    rebuild: Rebuild | None = None,
) -> int:
    """Rebuild the dirty minutes last marked at least ``settle_seconds`` ago, then
    every dirty hour, then day. Returns periods rebuilt.

    The sweep waits for minutes to settle (``LLMRUM_ROLLUP_SETTLE_SECONDS``): the
    current minute is marked by every sweep while turns arrive, and rebuilding it
    each time would read each of its turns a dozen times. Until rebuilt, the
    readers answer a dirty period from the raw turns (``stale_periods``).

    ``dirty`` and ``rebuild``: another rollup's marks and rebuild, refreshed the same
    way (``event_rollups.event_rollups_refresh``)."""
    done = 0
    for period in (MINUTE, HOUR, DAY):
        due = Q(period=period)
        if period == MINUTE and settle_seconds > 0:
            # Settled, or marked again and again for ten settle times (a long
            # conversation keeps marking the minute it began in): rebuild anyway.
            due &= Q(last_marked_at__lte=now - timedelta(seconds=settle_seconds)) | Q(
                first_marked_at__lte=now - timedelta(seconds=10 * settle_seconds)
            )
        while claimed := _refresh_batch(
            due=due,
            period=period,
            now=now,
            batch_size=batch_size,
            dirty=dirty,
            rebuild=rebuild or periods_rebuild,
        ):
            done += claimed
    return done


def _refresh_batch(
    *, due: Q, period: str, now: datetime, batch_size: int, dirty: Dirty, rebuild: Rebuild
) -> int:
    with transaction.atomic():
        commit_without_waiting_for_disk()
        claimed = list(
            dirty.objects.select_for_update(skip_locked=True)
            .filter(due)
            .order_by("last_marked_at", "id")
            .values_list("id", "app_id", "start")[:batch_size]
        )
        if not claimed:
            return 0
        by_app: dict[int, list[datetime]] = defaultdict(list)
        for _, app_id, start in claimed:
            by_app[app_id].append(start)
        for app_id, starts in sorted(by_app.items()):
            rebuild(app_id=app_id, period=period, starts=starts, now=now)
        if period in PARENT:
            parent = PARENT[period]
            rollups_mark(
                {(app_id, parent, floor(start, parent)) for _, app_id, start in claimed},
                now=now,
                dirty=dirty,
            )
        dirty.objects.filter(id__in=[row[0] for row in claimed]).delete()
    return len(claimed)


def server_only_traces(
    app_id: int, ranges: list[tuple[datetime, datetime]]
) -> list[tuple[float, str]]:
    """(start, likely cause) of the traces with server spans and no browser root."""
    if not ranges:
        return []
    rows = Trace.objects.filter(
        _sent_within(ranges, "start_ms"),
        app_id=app_id,
        propagation=Trace.Propagation.NO_BROWSER_ROOT,
    ).values_list("start_ms", "propagation_cause")
    return [(start_ms, cause or Trace.Propagation.NO_BROWSER_ROOT) for start_ms, cause in rows]


class ServerOnlyTrace(NamedTuple):
    start_ms: float
    cause: str
    model: str
    server_ttft_ms: float | None


def server_only_facts(
    app_id: int, ranges: list[tuple[datetime, datetime]]
) -> list[ServerOnlyTrace]:
    """``server_only_traces`` with each trace's model and server TTFT
    (``rules.server_only_metrics``), from its spans read by the trace's key as the
    stitch reads them, with the roles the stitch decided."""
    if not ranges:
        return []
    rows = list(
        Trace.objects.filter(
            _sent_within(ranges, "start_ms"),
            app_id=app_id,
            propagation=Trace.Propagation.NO_BROWSER_ROOT,
        ).values_list("trace_id", "start_ms", "propagation_cause", "roles")
    )
    if not rows:
        return []
    # Each trace's own time: its spans are read from the days around it only.
    windows = {(app_id, trace_id): (start_ms, start_ms) for trace_id, start_ms, *_ in rows}
    spans = load_batch(list(windows), windows).spans
    out = []
    for trace_id, start_ms, cause, roles in rows:
        own = spans.get((app_id, trace_id), [])
        for span in own:
            span.role = role_in_trace(span, roles or {})
        ttft, model = server_only_metrics(own)
        out.append(
            ServerOnlyTrace(start_ms, cause or Trace.Propagation.NO_BROWSER_ROOT, model, ttft)
        )
    return out


def count_server_only(trace: ServerOnlyTrace, *, whole: Accumulator, by_model: Accumulator) -> None:
    """Count a server-only trace in the application's row (with its likely cause) and
    in its model's ``SERVER_ONLY`` row (with its server TTFT)."""
    whole.counts["server_only_traces"] += 1
    whole.unlinked[trace.cause] = whole.unlinked.get(trace.cause, 0) + 1
    by_model.counts["server_only_traces"] += 1
    if trace.server_ttft_ms is not None:
        by_model.histograms["server_ttft_ms"].add(trace.server_ttft_ms)


def periods_rebuild(*, app_id: int, period: str, starts: list[datetime], now: datetime) -> None:
    """Replace these periods' rows: minutes from their turns (one query for the
    batch), longer periods from the rows of the period below."""
    ranges = _merged(starts, LENGTH[period])
    accs: dict[tuple[datetime, str, str], Accumulator] = defaultdict(Accumulator)
    if period == MINUTE:
        facts = turn_facts(app_id=app_id, ranges=ranges)
        for group, members in _grouped(facts, DIMENSIONS, minute=True).items():
            accs[group].add_all(members)
        for trace in server_only_facts(app_id, ranges):
            minute = minute_of(trace.start_ms)
            count_server_only(
                trace,
                whole=accs[(minute, "", "")],
                by_model=accs[(minute, SERVER_ONLY, trace.model)],
            )
    else:
        covered = Q()
        for lo, hi in ranges:
            covered |= Q(start__gte=lo, start__lt=hi)
        children = Rollup.objects.filter(covered, app_id=app_id, period=CHILD[period])
        for (start, dimension, key), counts, sketches in stored_rows(
            children, "start", "dimension", "key"
        ):
            accs[(floor(start, period), dimension, key)].merge(counts=counts, sketches=sketches)
    Rollup.objects.filter(app_id=app_id, period=period, start__in=starts).delete()
    insert_rows(
        [
            acc.to_row(
                app_id=app_id, period=period, start=start, dimension=dimension, key=key, now=now
            )
            for (start, dimension, key), acc in sorted(accs.items())
        ]
    )


def insert_rows(rows: Sequence[Model]) -> None:
    """Insert rows of one model (a rebuild's: ``Rollup``, ``EventRollup``): on
    PostgreSQL one statement with the rows as one jsonb document (as the stitch
    writes): bulk_create's per-value adaptation was most of a rebuild."""
    if not rows:
        return
    model = type(rows[0])
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(rows)
        return
    fields = columns_of(model)
    names = ", ".join(f.column for f in fields)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {model._meta.db_table} ({names}) SELECT {names} "
            f"FROM jsonb_to_recordset(%s::jsonb) AS r({recordset_of(fields)})",
            [encode_json([record_of(row, fields) for row in rows]).decode()],
        )


def rollups_backlog() -> tuple[int, datetime | None]:
    """(dirty periods, the oldest first mark) for /metrics."""
    pending = DirtyRollup.objects.order_by("first_marked_at").values_list(
        "first_marked_at", flat=True
    )
    oldest = pending.first()
    return DirtyRollup.objects.count(), oldest


# -- reading stored rows (the rebuild of longer periods, and analytics.windows) ---------


def stored_rows(
    rows: QuerySet[Rollup], *fields: str
) -> Iterator[tuple[tuple[Any, ...], tuple[int, ...], dict[str, Any]]]:
    """(fields, counts, sketches) of stored rows, the sketches read as text and
    decoded by msgspec: Django's JSON field decoding was a fifth of a 30-day answer."""
    for row in rows.values_list(*fields, *COUNTS, Cast("sketches", TextField())):
        yield row[: len(fields)], row[len(fields) : -1], _decode(row[-1])


class PackedRow:
    """A stored row's sketches packed for ``Accumulator.merge_packed``."""

    __slots__ = ("conversations", "histograms", "sessions", "unlinked")

    def __init__(self, sketches: dict[str, Any]) -> None:
        self.histograms = {name: PackedHistogram(sketches.get(name, [])) for name in DURATIONS}
        self.sessions = PackedHll(sketches.get("sessions", {}))
        self.conversations = PackedHll(sketches.get("conversations", {}))
        self.unlinked: dict[str, int] = sketches.get("unlinked", {})


# This process's packed rows by id (PostgreSQL's, from a sequence, never given to
# another row), with the ``computed_at`` they were packed from. A
# row changes only when a rebuild replaces it (the newest minutes, hours and days,
# mostly), so a report reads the sketches of the rows rebuilt since it last ran, not
# of every day, hour and minute of its window; at most ``PACKED_ROWS`` are kept (a day
# or hour row is about 10 KB, a minute's 1-5 KB: at most 100 MB; a 30-day overview with
# its previous period reads about 3,600), all dropped when full.
_packed: dict[int, tuple[datetime, PackedRow]] = {}
PACKED_ROWS = 10_000
_SKETCH_READ_BATCH = 500


def read_rows(
    rows: QuerySet[Rollup], *fields: str
) -> Iterator[tuple[tuple[Any, ...], tuple[int, ...], PackedRow]]:
    """(fields, counts, packed sketches) of stored rows, like ``stored_rows``: the
    rows' keys and counts, then by primary key the sketches of those this process
    has not packed at their ``computed_at``. A row replaced between the two reads
    (a rebuild deletes and inserts) makes it read everything again; after three
    times, ``stored_rows`` answers with one read."""
    width = len(fields)
    if connection.vendor != "postgresql":
        # SQLite gives a deleted row's id to the next row inserted: with a rebuild's
        # ``now`` repeated (tests pass one), (id, computed_at) would not tell them apart.
        for keys, counts, sketches in stored_rows(rows, *fields):
            yield keys, counts, PackedRow(sketches)
        return
    for _ in range(3):
        found = list(rows.values_list("id", "computed_at", *fields, *COUNTS))
        stale = [row[0] for row in found if _packed.get(row[0], (None,))[0] != row[1]]
        if len(_packed) + len(stale) > PACKED_ROWS:
            _packed.clear()
        for lo in range(0, len(stale), _SKETCH_READ_BATCH):
            batch = Rollup.objects.filter(id__in=stale[lo : lo + _SKETCH_READ_BATCH])
            for row_id, at, text in batch.values_list(
                "id", "computed_at", Cast("sketches", TextField())
            ):
                _packed[row_id] = (at, PackedRow(_decode(text)))
        packed = [_packed.get(row[0]) for row in found]
        if all(p is not None and p[0] == row[1] for p, row in zip(packed, found, strict=True)):
            for row, p in zip(found, packed, strict=True):
                yield row[2 : 2 + width], row[2 + width :], p[1]  # type: ignore[index]
            return
    for keys, counts, sketches in stored_rows(rows, *fields):
        yield keys, counts, PackedRow(sketches)
