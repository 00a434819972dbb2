"""The sweep: claim dirty traces, stitch them in batches, finalize quiet ones.

A batch is claimed with ``SELECT … FOR UPDATE SKIP LOCKED``, stitched, written
and its claims deleted in ONE transaction: any number of workers share the
backlog without stitching a trace twice at once, and a worker killed mid-batch
rolls back, leaving the claims for the next sweep. Ingest that touches a claimed
trace waits for the batch to commit and then marks it dirty again, so late data
is never lost.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import OperationalError, connection, connections, transaction

from correlator import selectors
from correlator.analytics.event_rollups import event_rollups_refresh
from correlator.analytics.rollups import rollups_refresh
from correlator.epoch import datetime_of
from correlator.models import SweepRun, Trace
from correlator.stitch.load import StoredSpan, TurnEvent, Windows, load_batch
from correlator.stitch.rules import (
    ClockSample,
    Skew,
    TurnMetrics,
    cached_input,
    estimate_skew,
    gateway_server_span,
    linked_span_ids,
    propagation_cause,
    tighten,
    turn_metrics,
)
from correlator.stitch.store import browser_span_record, restitches_queue, write_stitched
from rumserver.models import DirtyTrace, Span
from rumserver.pricing import PriceBook, price_book
from rumserver.roles import role_in_trace, trace_roles
from rumserver.sql import commit_without_waiting_for_disk

logger = logging.getLogger(__name__)

BATCH_SIZE = 500  # traces a batch: fewer, larger statements cost PostgreSQL less (bench/stitch)


@dataclass
class SweepResult:
    stitched: int = 0
    batches: int = 0
    finalized: int = 0
    rollups: int = 0
    seconds: float = 0.0


def sweep_backlog() -> int:
    """How many traces wait for stitching."""
    return DirtyTrace.objects.count()


def sweep_run(
    *,
    now: datetime,
    batch_size: int = BATCH_SIZE,
    finalize_all: bool = False,
    threads: int | None = None,
) -> SweepResult:
    """Stitch every dirty trace in batches, rebuild the rollup periods that have
    settled, then mark quiet open traces final (``finalize_all``: every open trace,
    whatever its quiet time, and every dirty rollup). ``threads``: sweeping threads
    (``LLMRUM_SWEEP_THREADS``; see ``_stitch_backlog``)."""
    started = time.monotonic()
    result = SweepResult()
    threads = settings.LLMRUM_SWEEP_THREADS if threads is None else threads
    result.stitched, result.batches = _stitch_backlog(
        now=now, batch_size=batch_size, threads=threads
    )
    settle = 0.0 if finalize_all else settings.LLMRUM_ROLLUP_SETTLE_SECONDS
    result.rollups = rollups_refresh(now=now, settle_seconds=settle)
    # The vitals and errors pages' rollups: settled like the turns' (their minute is
    # marked by every beacon with a vital or an error while it lasts).
    result.rollups += event_rollups_refresh(now=now, settle_seconds=settle)
    quiet = timedelta(seconds=settings.LLMRUM_TRACE_QUIET_SECONDS)
    open_traces = Trace.objects.filter(state=Trace.State.OPEN)
    if not finalize_all:
        open_traces = open_traces.filter(last_received_at__lte=now - quiet)
    result.finalized = open_traces.update(state=Trace.State.FINAL)
    result.seconds = time.monotonic() - started
    SweepRun.objects.create(
        started_at=now, seconds=result.seconds, stitched=result.stitched, finalized=result.finalized
    )
    # Keep the last hundred: /metrics only reads the newest.
    stale = SweepRun.objects.order_by("-started_at").values_list("id", flat=True)[100:200]
    SweepRun.objects.filter(id__in=list(stale)).delete()
    return result


def _stitch_backlog(*, now: datetime, batch_size: int, threads: int) -> tuple[int, int]:
    """(traces stitched, batches) until no dirty trace is left.

    A batch waits on PostgreSQL about as long as it computes. With more than one
    thread, each sweeping on its own connection, one thread's Python runs while
    another's statements do: the process keeps both cores busy. Batches are claimed
    with SKIP LOCKED, so threads share the backlog like separate workers do. One
    thread where that cannot help or is not safe: SQLite, or a caller already inside
    a transaction (other connections would not see its rows); and a backlog of one
    batch or less, the usual one between sweeps (no connections opened for nothing)."""
    one_thread = threads <= 1 or connection.vendor != "postgresql" or connection.in_atomic_block
    if one_thread or not DirtyTrace.objects.all()[batch_size : batch_size + 1].exists():
        return _sweep_loop(now=now, batch_size=batch_size)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="llmrum-sweep") as pool:
        futures = [
            pool.submit(_sweep_loop_on_own_connection, now=now, batch_size=batch_size)
            for _ in range(threads)
        ]
        done = [future.result() for future in futures]  # re-raises a thread's error
    return sum(n for n, _ in done), sum(b for _, b in done)


def _sweep_loop(*, now: datetime, batch_size: int) -> tuple[int, int]:
    stitched = batches = 0
    while True:
        claimed = _sweep_batch_retrying(now=now, batch_size=batch_size)
        requeued = restitches_queue(now=now)  # traces a committed batch asked to redo
        if not claimed and not requeued:
            return stitched, batches
        stitched += claimed
        batches += bool(claimed)


def _sweep_loop_on_own_connection(*, now: datetime, batch_size: int) -> tuple[int, int]:
    try:
        return _sweep_loop(now=now, batch_size=batch_size)
    finally:
        connections.close_all()  # this thread's connections, not the caller's


# SQLSTATEs of a transaction PostgreSQL aborted to let a concurrent one through.
_RETRYABLE = {"40P01": "deadlock detected", "40001": "serialization failure"}
ATTEMPTS = 3


def _sweep_batch_retrying(*, now: datetime, batch_size: int) -> int:
    """``_sweep_batch``, again when PostgreSQL aborted it to break a lock cycle (with
    ingest or another sweep; the sweep's own row locks are taken in one order, so this
    is rare): the batch rolled back whole and its claims were released, so running it
    again is exact."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _sweep_batch(now=now, batch_size=batch_size)
        except OperationalError as error:
            state = getattr(error.__cause__, "sqlstate", None)
            if state not in _RETRYABLE or attempt == ATTEMPTS:
                raise
            logger.warning(
                "sweep batch aborted (%s), attempt %d: retrying", _RETRYABLE[state], attempt
            )
    raise AssertionError("unreachable")


def _sweep_batch(*, now: datetime, batch_size: int) -> int:
    with transaction.atomic():
        commit_without_waiting_for_disk()
        claimed = list(
            DirtyTrace.objects.select_for_update(skip_locked=True)
            .order_by("last_marked_at", "id")
            .values_list("id", "app_id", "trace_id", "first_marked_at", "last_marked_at")[
                :batch_size
            ]
        )
        if not claimed:
            return 0
        # When each trace's new data arrived: the days its raw rows are read from.
        windows = {
            (app_id, trace_id): (first.timestamp() * 1000, last.timestamp() * 1000)
            for _, app_id, trace_id, first, last in claimed
        }
        traces_stitch(keys=list(windows), now=now, windows=windows)
        DirtyTrace.objects.filter(id__in=[row[0] for row in claimed]).delete()
    return len(claimed)


def traces_stitch(
    *, keys: list[tuple[int, str]], now: datetime, windows: Windows | None = None
) -> None:
    """Rebuild the stitched trace, its turn and its browser span for each
    (app id, trace id) from the raw rows. Same rows in, same result out.
    ``windows``: when each trace's data arrived (``load_batch``)."""
    wanted = set(keys)
    batch = load_batch(keys, windows)
    replaced = _replaced_span_ids(batch.turns)
    # And those that a turn of this very batch regenerates (not stored yet to be found).
    for event in batch.turns.values():
        if event.data.get("regenerate_of"):
            replaced.add((event.app_id, str(event.data["regenerate_of"])))
    prices = price_book(app_ids={app_id for app_id, _ in wanted})
    traces, turn_rows, browser_spans = [], [], []
    for key in sorted(wanted):
        stitched = _stitch_one(
            key=key,
            spans=batch.spans.get(key, []),
            turn=batch.turns.get(key),
            samples=batch.clock_samples,
            replaced=replaced,
            prices=prices,
            now=now,
        )
        if stitched is None:
            continue
        trace, turn, browser_span = stitched
        traces.append(trace)
        if turn is not None and browser_span is not None:  # made together, from the turn
            turn_rows.append(turn)
            browser_spans.append(browser_span)
    write_stitched(
        traces=traces,
        turns=turn_rows,
        browser_spans=browser_spans,
        keys=wanted,
        now=now,
        browser_sent={(e.app_id, e.span_id): _sent_ms(e) for e in batch.turns.values()},
    )


def _replaced_span_ids(turns: dict[tuple[int, str], TurnEvent]) -> set[tuple[int, str]]:
    """(app, span id) of the turns among these that a later stitched turn regenerated."""
    replaced = selectors.regenerated_span_ids(
        sent={event.span_id: _sent_ms(event) for event in turns.values()}
    )
    apps = {event.app_id for event in turns.values()}
    return {(app, span) for app, span in replaced if app in apps}


def _sent_ms(event: TurnEvent) -> float:
    """The turn's send time on its browser's clock (a number: checked at ingest)."""
    return float(event.data.get("t_send") or 0.0)


_BROWSER_ATTRIBUTES = (
    "url",
    "method",
    "status",
    "outcome",
    "chunks",
    "model",
    "conversation_id",
    "turn_index",
    "regenerate_of",
    "intent_correction",
    "error",
)


def _stitch_one(
    *,
    key: tuple[int, str],
    spans: list[StoredSpan],
    turn: TurnEvent | None,
    samples: dict[int, list[ClockSample]],
    replaced: set[tuple[int, str]],
    prices: PriceBook,
    now: datetime,
) -> tuple[dict[str, Any], dict[str, Any] | None, dict[str, Any] | None] | None:
    """(trace row, turn row, browser span row), as column -> value dicts for
    ``write_stitched``."""
    app_id, trace_id = key
    if not spans and turn is None:
        return None  # a score or a hint for a trace with no rows (yet)
    data: dict[str, Any] = turn.data if turn is not None else {}
    browser_id = turn.span_id if turn is not None else ""

    roles = trace_roles(spans, browser_id)
    for span in spans:
        span.role = role_in_trace(span, roles)
    span_ids = {s.span_id for s in spans}

    received_us = [s.received_us for s in spans] + ([turn.received_us] if turn else [])
    last_received = datetime_of(max(received_us))
    quiet = timedelta(seconds=settings.LLMRUM_TRACE_QUIET_SECONDS)
    state = Trace.State.OPEN if now - last_received < quiet else Trace.State.FINAL
    linked = bool(browser_id) and bool(linked_span_ids(spans, browser_id))
    root_remote = any(s.parent_span_id and s.parent_span_id not in span_ids for s in spans)
    propagation, cause = propagation_cause(
        has_browser=turn is not None,
        has_server=bool(spans),
        turn=data,
        root_has_remote_parent=root_remote,
    )

    skew = Skew(0.0, "")
    turn_row = browser_span = None
    span_ends = [s.end_ns / 1e6 for s in spans]
    if turn is not None:
        t_send = float(data["t_send"])
        t_end = float(data.get("t_end") or data.get("t_last_token") or t_send)
        gateway = gateway_server_span(spans, browser_id)
        skew = tighten(
            estimate_skew(data, samples.get(turn.session_id, [])),
            t_send=t_send,
            t_end=max(t_end, t_send),
            outcome=str(data.get("outcome")),
            gateway=(gateway.start_ns / 1e6, gateway.end_ns / 1e6) if gateway else None,
        )
        start_ms, end_ms = t_send + skew.ms, max(t_end, t_send) + skew.ms
        browser_span = _browser_span(app_id, trace_id, turn, start_ms, end_ms, skew)
        metrics = turn_metrics(data, spans, browser_id)
        turn_row = {
            "app_id": app_id,
            "session_id": turn.session_id,
            "span_id": browser_id,
            "conversation_id": str(data.get("conversation_id") or turn.session_key)[:128],
            "turn_index": data.get("turn_index"),
            "t_send_ms": start_ms,
            "outcome": str(data.get("outcome") or "completed"),
            "status": data.get("status"),
            "regenerated": (app_id, browser_id) in replaced,
            "regenerate_of": str(data.get("regenerate_of") or ""),
            "intent_correction": bool(data.get("intent_correction")),
            **metrics.__dict__,
            "cost_nano_usd": _turn_cost(app_id, start_ms, data, metrics, prices),
        }
        trace_start, trace_end = start_ms, max([end_ms, *span_ends])
    else:
        trace_start, trace_end = min(s.start_ns for s in spans) / 1e6, max(span_ends)
    trace = {
        "app_id": app_id,
        "trace_id": trace_id,
        "state": state.value,
        "linked": linked,
        "clock_skew_ms": skew.ms,
        "skew_source": skew.source,
        "clock_skew_uncertainty_ms": skew.uncertainty_ms,
        "start_ms": trace_start,
        "end_ms": trace_end,
        "span_count": len(spans) + (1 if turn is not None else 0),
        "propagation": propagation,
        "propagation_cause": cause,
        "last_received_at": last_received,
        "stitched_at": now,
        "roles": roles,
    }
    return trace, turn_row, browser_span


def _turn_cost(
    app_id: int, t_send_ms: float, data: dict[str, Any], metrics: TurnMetrics, prices: PriceBook
) -> int | None:
    """The turn's cost at the price of its time, fixed here at stitch (see
    ``rumserver.pricing``). Storing it is safe because a price only ever starts
    now: no later price can reach back to a turn already sent, and a re-stitch
    computes the same figure. Cached input counts only when the token counts came
    from the same stream usage that says how many were cached."""
    cached, uncounted = cached_input(data) if metrics.tokens_source == "stream" else (0, 0)
    return prices.cost_nano_usd(
        app_id=app_id,
        model=metrics.model,
        at_ms=t_send_ms,
        input_tokens=(metrics.input_tokens or 0) + uncounted,
        output_tokens=metrics.output_tokens,
        cached_input_tokens=cached,
    )


def _browser_span(
    app_id: int, trace_id: str, turn: TurnEvent, start_ms: float, end_ms: float, skew: Skew
) -> dict[str, Any]:
    data = turn.data
    attributes = {key: data[key] for key in _BROWSER_ATTRIBUTES if data.get(key) not in (None, "")}
    attributes["llmrum.clock_skew_ms"] = skew.ms
    attributes["llmrum.skew_source"] = skew.source
    return browser_span_record(
        app_id=app_id,
        trace_id=trace_id,
        span_id=turn.span_id,
        role=Span.Role.BROWSER.value,
        service="browser",
        name=f"{data.get('method') or 'POST'} {data.get('url') or 'chat'}"[:256],
        kind=3,  # CLIENT
        start_ns=round(start_ms * 1e6),
        end_ns=round(end_ms * 1e6),
        status_code=2 if data.get("outcome") == "error" else 0,
        attributes=attributes,
        received_at=datetime_of(turn.received_us),
    )
