"""Cause and effect in stitched traces (DESIGN.md §10.4): rules that no trace of a
physically possible request breaks, and a reader that checks every stored trace
against them in batches.

Each rule is a plain function of one trace as the trace answer shows it: the
stitched ``Trace`` and ``Turn``, and its spans with their roles in the trace
(``Trace.role_of``), the browser span at its skew-corrected times. A rule names
one kind of fault, so a broken trace says what is wrong with it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from django.db.models.fields.json import KT

from correlator import selectors
from correlator.models import Trace, Turn
from correlator.stitch.rules import MODEL_TTFT_SOURCES, gateway_server_span
from rumserver.ingest.otlp.spans import FIRST_TOKEN_EVENTS
from rumserver.models import Span
from rumserver.roles import SOURCE, from_browser

TOLERANCE_MS = 1.0  # clocks and exporters round; a millisecond is not a fault
NS_PER_MS = 1_000_000
# The backend helper's span for a streamed body (DESIGN.md §10.2): it begins when the
# body does, after OpenTelemetry's Django instrumentation ended its parent, by design.
STREAM_SPAN_NAME = "llmrum.stream"
MUST_CONTAIN_GATEWAY = ("completed", "error")
BATCH_SIZE = 1000  # traces read at a time: two queries each, a few MB in memory


@dataclass(slots=True)
class SpanFacts:
    """The columns of a stored span the rules read (a model instance per span was
    most of the check's time). ``resource`` holds only ``llmrum.source``, which is all
    ``from_browser`` looks at."""

    trace_id: str
    span_id: str
    parent_span_id: str
    role: str
    service: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    ttft_s: float | None
    ttft_source: str
    queue_s: float | None
    events: list[dict[str, Any]]
    resource: dict[str, Any]


# What the rules read of a span: a stored one, or its columns the check reads.
CheckedSpan = Span | SpanFacts


@dataclass
class TraceView:
    """One stitched trace: ``spans`` carry their role in the trace."""

    trace: Trace
    turn: Turn | None
    spans: Sequence[CheckedSpan]

    @cached_property
    def browser(self) -> CheckedSpan | None:
        if self.turn is None:
            return None
        return next(
            (s for s in self.spans if s.role == "browser" and s.span_id == self.turn.span_id), None
        )

    @cached_property
    def server_spans(self) -> list[CheckedSpan]:
        """Spans timed on server clocks: not the browser turn, nor spans a browser's
        OpenTelemetry exporter sent (on the browser's own, uncorrected clock)."""
        return [s for s in self.spans if s.role != "browser" and not from_browser(s)]

    @cached_property
    def skew_uncertainty_ms(self) -> float:
        """Null (unbounded, or unknown) counts as 0: the rules then allow no skew error."""
        return self.trace.clock_skew_uncertainty_ms or 0.0


def _ms(ns: int) -> float:
    return ns / NS_PER_MS


def _first_token_marks(span: CheckedSpan) -> Iterator[int]:
    """Times (ns) of the span's first-token events."""
    for event in span.events or []:
        if isinstance(event, dict) and event.get("name") in FIRST_TOKEN_EVENTS:
            time_ns = event.get("time_ns")
            if isinstance(time_ns, int):
                yield time_ns


def _has_model_ttft(span: CheckedSpan) -> bool:
    return (
        span.role == "model" and span.ttft_s is not None and span.ttft_source in MODEL_TTFT_SOURCES
    )


# --- the rules ------------------------------------------------------------------------


def span_outside_parent(view: TraceView) -> bool:
    """A server span starting before its server parent, or ending after it, by more
    than the tolerance. The browser span as parent is the next rule's (a stopped
    turn's gateway span may outlive it); ``llmrum.stream`` may outlive its parent."""
    by_id = {s.span_id: s for s in view.server_spans}
    for span in view.server_spans:
        parent = by_id.get(span.parent_span_id)
        if parent is None:
            continue
        if _ms(parent.start_ns - span.start_ns) > TOLERANCE_MS:
            return True
        if span.name != STREAM_SPAN_NAME and _ms(span.end_ns - parent.end_ns) > TOLERANCE_MS:
            return True
    return False


def browser_not_containing_gateway(view: TraceView) -> bool:
    """A completed or errored turn's browser span (skew-corrected) not containing the
    gateway's server span: the answer cannot reach the browser before it leaves."""
    if view.turn is None or view.browser is None or view.turn.outcome not in MUST_CONTAIN_GATEWAY:
        return False
    gateway = gateway_server_span(view.server_spans, view.turn.span_id)
    if gateway is None:
        return False
    early = _ms(view.browser.start_ns - gateway.start_ns)
    late = _ms(gateway.end_ns - view.browser.end_ns)
    return early > TOLERANCE_MS or late > TOLERANCE_MS


def model_ttft_over_span(view: TraceView) -> bool:
    """A model span whose TTFT, or time in queue, is longer than the span: its first
    token came, or its request left the queue, after the span ended."""
    for span in view.server_spans:
        if span.role != "model":
            continue
        duration = _ms(span.end_ns - span.start_ns) + TOLERANCE_MS
        if span.ttft_s is not None and _has_model_ttft(span) and span.ttft_s * 1000 > duration:
            return True
        if span.queue_s is not None and span.queue_s * 1000 > duration:
            return True
    return False


def first_token_after_end(view: TraceView) -> bool:
    """A first-token mark after its span's end: a ``first_token`` event, a TTFT
    attribute (model spans' are the rule above), or the turn's first token after the
    browser span's end."""
    for span in view.server_spans:
        if any(_ms(at - span.end_ns) > TOLERANCE_MS for at in _first_token_marks(span)):
            return True
        if span.ttft_s is None or span.ttft_source.startswith("event:") or _has_model_ttft(span):
            continue
        if span.ttft_s * 1000 > _ms(span.end_ns - span.start_ns) + TOLERANCE_MS:
            return True
    turn, browser = view.turn, view.browser
    if turn is None or browser is None or turn.client_ttft_ms is None:
        return False
    return turn.t_send_ms + turn.client_ttft_ms > _ms(browser.end_ns) + TOLERANCE_MS


def client_ttft_below_server(view: TraceView) -> bool:
    """The browser saw its first token sooner than the gateway sent it, by more than
    the skew uncertainty (null: 0). Network overhead is client minus server TTFT, so
    this is also every negative network overhead beyond that uncertainty."""
    turn = view.turn
    if turn is None or turn.client_ttft_ms is None or turn.server_ttft_ms is None:
        return False
    return turn.client_ttft_ms < turn.server_ttft_ms - view.skew_uncertainty_ms


def server_ttft_below_model(view: TraceView) -> bool:
    """The gateway sent its first token sooner than the model made it, by more than
    the skew uncertainty (null: 0)."""
    turn = view.turn
    if turn is None or turn.server_ttft_ms is None or turn.model_ttft_ms is None:
        return False
    return turn.server_ttft_ms < turn.model_ttft_ms - view.skew_uncertainty_ms


# Durations that are one clock's elapsed time, never negative. Network overhead is
# not among them: it takes two processes' measurements (the rule above judges it).
TURN_DURATIONS = (
    "client_ttft_ms",
    "server_ttft_ms",
    "model_ttft_ms",
    "queue_ms",
    "tbt_p50_ms",
    "tbt_p95_ms",
    "tbt_max_ms",
    "tpot_ms",
)


def negative_duration(view: TraceView) -> bool:
    """A span ending before it starts, a trace too, a negative TTFT, queue, gap or
    time per output token, or a first-token mark before its span's start."""
    if view.trace.end_ms < view.trace.start_ms:
        return True
    for span in view.spans:
        if span.end_ns < span.start_ns:
            return True
        if (span.ttft_s is not None and span.ttft_s < 0) or (
            span.queue_s is not None and span.queue_s < 0
        ):
            return True
        if any(_ms(span.start_ns - at) > TOLERANCE_MS for at in _first_token_marks(span)):
            return True
    if view.turn is not None:
        values = (getattr(view.turn, name) for name in TURN_DURATIONS)
        return any(value is not None and value < 0 for value in values)
    return False


@dataclass(frozen=True)
class Rule:
    name: str
    broken: Callable[[TraceView], bool]

    @property
    def text(self) -> str:
        return (self.broken.__doc__ or "").split("\n\n")[0].replace("\n", " ").strip()


RULES: tuple[Rule, ...] = tuple(
    Rule(check.__name__, check)
    for check in (
        span_outside_parent,
        browser_not_containing_gateway,
        model_ttft_over_span,
        first_token_after_end,
        client_ttft_below_server,
        server_ttft_below_model,
        negative_duration,
    )
)


def broken_rules(view: TraceView) -> list[str]:
    """The names of the rules this trace breaks, in ``RULES`` order."""
    return [rule.name for rule in RULES if rule.broken(view)]


# --- checking the stored traces ---------------------------------------------------------


@dataclass
class InvariantReport:
    checked: int = 0
    counts: dict[str, int] = field(default_factory=lambda: {r.name: 0 for r in RULES})
    examples: dict[str, list[str]] = field(default_factory=lambda: {r.name: [] for r in RULES})

    @property
    def broken(self) -> bool:
        return any(self.counts.values())

    def add(self, view: TraceView, *, examples: int) -> None:
        self.checked += 1
        for name in broken_rules(view):
            self.counts[name] += 1
            if len(self.examples[name]) < examples:
                self.examples[name].append(view.trace.trace_id)


TRACE_COLUMNS = (
    "id",
    "app_id",
    "trace_id",
    "start_ms",
    "end_ms",
    "clock_skew_uncertainty_ms",
    "roles",
)


SPAN_COLUMNS = (
    "trace_id",
    "span_id",
    "parent_span_id",
    "role",
    "service",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "ttft_s",
    "ttft_source",
    "queue_s",
    "events",
)


def _span_facts(*, app_id: int, trace_ids: list[str]) -> Iterator[SpanFacts]:
    rows = Span.objects.filter(app_id=app_id, trace_id__in=trace_ids).values_list(
        *SPAN_COLUMNS, KT(f"resource__{SOURCE}")
    )
    for *columns, source in rows:
        # The fields in order, resource last (one tuple: mypy cannot check a call that
        # spreads a row of unknown length and then names a field).
        yield SpanFacts(*(*columns, {SOURCE: source} if source else {}))


def trace_batches(
    *, app_id: int, since_ms: float | None = None, batch_size: int = BATCH_SIZE
) -> Iterator[list[TraceView]]:
    """The application's stitched traces by start, ``batch_size`` at a time, each
    batch read with two indexed queries: traces by (app, start) from where the last
    batch ended, then their spans by (app, trace id). Memory holds one batch.

    PostgreSQL picks those index scans from the tables' statistics: on tables filled
    moments ago and not analyzed yet it may scan the application's rows per batch."""
    traces = Trace.objects.filter(app_id=app_id).only(*TRACE_COLUMNS).order_by("start_ms", "id")
    if since_ms is not None:
        traces = traces.filter(start_ms__gte=since_ms)
    after: tuple[float, int] | None = None
    while True:
        page = traces
        if after is not None:
            # Keyset paging: a range scan of the (app, start) index, whatever the depth.
            page = traces.filter(start_ms__gte=after[0]).exclude(
                start_ms=after[0], id__lte=after[1]
            )
        # Each trace's turn by the turn's whole key (selectors.with_turns): joined, a
        # batch of traces could hash every day partition of turns.
        found = selectors.with_turns(list(page[:batch_size]))
        if not found:
            return
        after = (found[-1].start_ms, found[-1].id)
        spans: dict[str, list[SpanFacts]] = {t.trace_id: [] for t in found}
        for span in _span_facts(app_id=app_id, trace_ids=list(spans)):
            spans[span.trace_id].append(span)
        views = []
        for trace in found:
            for span in spans[trace.trace_id]:
                span.role = trace.role_of(span)
            views.append(TraceView(trace, trace.turn_or_none, spans[trace.trace_id]))
        yield views


def traces_check(
    *,
    app_ids: Sequence[int],
    since_ms: float | None = None,
    batch_size: int = BATCH_SIZE,
    examples: int = 5,
) -> InvariantReport:
    """Every stitched trace of these applications (started at ``since_ms`` or later)
    against every rule: how many traces break each, and the first few of them."""
    report = InvariantReport()
    for app_id in app_ids:
        for views in trace_batches(app_id=app_id, since_ms=since_ms, batch_size=batch_size):
            for view in views:
                report.add(view, examples=examples)
    return report
