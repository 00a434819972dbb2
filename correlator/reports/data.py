"""What the report pages show, gathered as plain functions (no HTTP): the views parse
the query, call one of these and render. Values are formatted here, so the
templates only place text (Django escapes it) and SVG the chart module escaped.

Fast with millions of spans: the overview and the propagation counts read only
``correlator.analytics.figures`` (rollups); the other pages read stitched rows through indexes,
always with a LIMIT, and never count a whole table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q
from django.http import Http404
from django.utils.dateparse import parse_datetime
from django.utils.safestring import SafeString

from correlator import selectors
from correlator.analytics import figures
from correlator.models import Trace, Turn
from correlator.reports import charts
from correlator.stitch.rules import gateway_server_span, model_spans
from rumserver.models import Application, BrowserEvent, BrowserSession, Span

User = AbstractBaseUser | AnonymousUser

# --- time ranges ------------------------------------------------------------------

PRESETS: dict[str, tuple[timedelta, timedelta]] = {
    # name: (length, chart step)
    "1h": (timedelta(hours=1), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
STEPS = [timedelta(minutes=m) for m in (1, 5, 15, 30, 60, 180, 360, 720, 1440, 10080)]
MAX_POINTS = 48
MAX_RANGE = timedelta(days=400)


@dataclass(frozen=True)
class TimeRange:
    since: datetime
    until: datetime
    preset: str  # "" for a custom since/until
    step: timedelta

    def query(self) -> dict[str, str]:
        """The query parameters that give this range back (for links)."""
        if self.preset:
            return {"range": self.preset}
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}

    @property
    def label(self) -> str:
        if self.preset:
            return f"last {self.preset}"
        return f"{when(self.since)} – {when(self.until)}"


def parse_when(text: str) -> datetime | None:
    """ISO 8601 or an HTML ``datetime-local`` value; naive times are UTC."""
    try:
        value = parse_datetime(text.strip())
    except ValueError:
        return None
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def step_for(length: timedelta) -> timedelta:
    return next((s for s in STEPS if length / s <= MAX_POINTS), STEPS[-1])


def time_range(
    params: Mapping[str, str], *, now: datetime, default: str = "24h"
) -> tuple[TimeRange, list[str]]:
    """The range a page's query asks for, and what was wrong with it (the default
    range is used then). Preset ranges end at the end of the current minute, as the
    metrics API's default does."""
    errors: list[str] = []
    end_of_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    since_text, until_text = params.get("since", ""), params.get("until", "")
    if since_text or until_text:
        since = parse_when(since_text) if since_text else None
        until = parse_when(until_text) if until_text else end_of_minute
        if since is None or until is None:
            errors.append("since and until must be dates and times, e.g. 2026-01-31T09:00")
        elif since >= until:
            errors.append("since must be before until")
        elif until - since > MAX_RANGE:
            errors.append(f"a range is at most {MAX_RANGE.days} days")
        else:
            return TimeRange(since, until, "", step_for(until - since)), errors
    preset = params.get("range") or default
    if preset not in PRESETS:
        errors.append(f"unknown range {preset!r}: one of {', '.join(PRESETS)}")
        preset = default
    length, step = PRESETS[preset]
    return TimeRange(end_of_minute - length, end_of_minute, preset, step), errors


# --- formatting -------------------------------------------------------------------

DASH = "—"


def when(value: datetime | float | None) -> str:
    """UTC date and time; a float is epoch ms."""
    if value is None:
        return DASH
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value / 1000, tz=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def fmt_ms(value: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:,.0f} ms" if abs(value) >= 10 else f"{value:.1f} ms"


def fmt_rate(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def fmt_number(value: float | None, digits: int = 2) -> str:
    if value is None:
        return DASH
    if isinstance(value, int) or float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


# --- applications -----------------------------------------------------------------


def choose_app(*, user: User, slug: str | None) -> tuple[list[Application], Application | None]:
    """The applications this user may see and the one the page is about: the one
    named, else the first. Naming one the user may not see is a 404, so a page never
    tells whether another team's application exists."""
    apps = list(selectors.visible_applications(user).order_by("name", "id")[:500])
    if slug:
        found = next((a for a in apps if a.slug == slug), None)
        if found is None:
            found = selectors.visible_applications(user).filter(slug=slug).first()
        if found is None:
            raise Http404("no such application among yours")
        return apps, found
    return apps, (apps[0] if apps else None)


# --- overview ---------------------------------------------------------------------

GROUPS = {"model": "Model", "browser": "Browser", "os": "OS", "device": "Device class"}
LATENCIES = [
    ("client_ttft_ms", "Client TTFT (what the user waits)"),
    ("server_ttft_ms", "Server TTFT (gateway)"),
    ("model_ttft_ms", "Model TTFT"),
    ("queue_ms", "Queue (model server)"),
    ("tbt_ms", "TBT (time between tokens)"),
    ("tpot_ms", "TPOT (time per output token)"),
]
RATES = [
    ("stop_rate", "Stop rate"),
    ("regenerate_rate", "Regenerate rate"),
    ("abandonment_rate", "Abandonment rate"),
    ("abandonment_before_first_token_rate", "Abandoned before first token"),
    ("error_rate", "Error rate"),
    ("first_response_accuracy", "First-response accuracy"),
    ("hallucination_rate", "Hallucination rate"),
]


@dataclass
class Figure:
    key: str
    label: str
    value: str


PERCENTILES_EXACT = "percentiles are exact (nearest-rank over every turn)"


def percentiles_note(answer: dict[str, Any]) -> str:
    """The footer's words for how a metrics answer's percentiles were computed."""
    if answer.get("percentiles") == "sketch":
        error = answer["percentiles_relative_error"]
        return f"percentiles are from rollup sketches, within {error:.0%} of the exact value"
    return PERCENTILES_EXACT


@dataclass
class Overview:
    app: Application
    window: TimeRange
    cards: list[Figure]
    latencies: list[dict[str, str]]
    rates: list[Figure]
    charts: list[tuple[str, SafeString]]
    groups: list[dict[str, Any]] = field(default_factory=list)
    percentiles_note: str = PERCENTILES_EXACT


def _x_label(at: datetime, window: TimeRange) -> str:
    if window.until - window.since <= timedelta(days=1):
        return at.strftime("%H:%M")
    if window.step >= timedelta(days=1):
        return at.strftime("%b %d")
    return at.strftime("%b %d %H:%M")


def _group_row(group: dict[str, Any]) -> dict[str, str]:
    rates = group["rates"]
    return {
        "key": str(group["key"]) or "(unknown)",
        "turns": fmt_number(group["turns"]),
        "client_ttft_p50": fmt_ms(group["client_ttft_ms"]["p50"]),
        "client_ttft_p95": fmt_ms(group["client_ttft_ms"]["p95"]),
        "server_ttft_p50": fmt_ms(group["server_ttft_ms"]["p50"]),
        "model_ttft_p50": fmt_ms(group["model_ttft_ms"]["p50"]),
        "tbt_p50": fmt_ms(group["tbt_ms"]["p50"]),
        "tpot_p50": fmt_ms(group["tpot_ms"]["p50"]),
        "input_tokens": fmt_number(group["input_tokens"]),
        "output_tokens": fmt_number(group["output_tokens"]),
        "stop_rate": fmt_rate(rates["stop_rate"]),
        "regenerate_rate": fmt_rate(rates["regenerate_rate"]),
        "abandonment_rate": fmt_rate(rates["abandonment_rate"]),
        "error_rate": fmt_rate(rates["error_rate"]),
        "first_response_accuracy": fmt_rate(rates["first_response_accuracy"]),
        "hallucination_rate": fmt_rate(rates["hallucination_rate"]),
    }


def overview(*, app: Application, window: TimeRange) -> Overview:
    """Every figure of the overview, from ``window_breakdown`` (totals and every split
    in one read) and ``window_series`` (the charts) only."""
    grouped = figures.window_breakdown(
        app=app, since=window.since, until=window.until, group_bys=list(GROUPS)
    )
    totals = grouped["model"]  # every grouped answer carries the window's totals too
    series = figures.window_series(
        app=app, since=window.since, until=window.until, step=window.step
    )
    cards = [
        Figure("turns", "Turns", fmt_number(totals["turns"])),
        Figure("sessions", "Sessions", fmt_number(totals["sessions"])),
        Figure("conversations", "Conversations", fmt_number(totals["conversations"])),
        Figure("turns_per_session", "Turns per session", fmt_number(totals["turns_per_session"])),
        Figure(
            "intent_corrections",
            "Intent corrections per conversation",
            fmt_number(totals["intent_corrections_per_conversation"]),
        ),
        Figure("input_tokens", "Tokens in", fmt_number(totals["input_tokens"])),
        Figure("output_tokens", "Tokens out", fmt_number(totals["output_tokens"])),
    ]
    latencies = [
        {"key": key, "label": label}
        | {q: fmt_ms(totals[key][q]) for q in ("p50", "p75", "p95", "p99")}
        for key, label in LATENCIES
    ]
    rates = [Figure(key, label, fmt_rate(totals["rates"][key])) for key, label in RATES]

    labels = [_x_label(point["since"], window) for point in series]
    drawn: list[tuple[str, SafeString]] = []
    for q in ("p50", "p75", "p95"):
        title = f"Time to first token, {q}: client next to server and model"
        drawn.append((title, charts.line_chart(
            title=title, x_labels=labels,
            series=[charts.Series(name, [p[key][q] for p in series]) for name, key in
                    (("client", "client_ttft_ms"), ("server", "server_ttft_ms"),
                     ("model", "model_ttft_ms"))],
        )))  # fmt: skip
    title = "Time between tokens and time per output token (p50, p95)"
    drawn.append((title, charts.line_chart(
        title=title, x_labels=labels,
        series=[charts.Series(f"{name} {q}", [p[key][q] for p in series])
                for name, key in (("TBT", "tbt_ms"), ("TPOT", "tpot_ms")) for q in ("p50", "p95")],
    )))  # fmt: skip
    title = "Stop, regenerate, abandonment and error rates"
    drawn.append((title, charts.line_chart(
        title=title, x_labels=labels, unit="%",
        series=[charts.Series(label, [p["rates"][key] for p in series]) for key, label in
                (("stop_rate", "stop"), ("regenerate_rate", "regenerate"),
                 ("abandonment_rate", "abandon"), ("error_rate", "error"))],
    )))  # fmt: skip
    title = "Turns"
    drawn.append((title, charts.bar_chart(
        title=title, labels=labels,
        series=[charts.Series("turns", [p["turns"] for p in series])],
    )))  # fmt: skip
    models = grouped["model"]["groups"]
    title = "Tokens in and out per model"
    drawn.append((title, charts.bar_chart(
        title=title, labels=[str(g["key"]) or "(unknown)" for g in models],
        series=[charts.Series("tokens in", [g["input_tokens"] for g in models]),
                charts.Series("tokens out", [g["output_tokens"] for g in models])],
    )))  # fmt: skip
    groups = [
        {"key": key, "label": label, "rows": [_group_row(g) for g in grouped[key]["groups"]]}
        for key, label in GROUPS.items()
    ]
    return Overview(app, window, cards, latencies, rates, drawn, groups, percentiles_note(totals))


# --- trace list -------------------------------------------------------------------

OUTCOMES = ["completed", "stopped", "abandoned", "error"]
PAGE_SIZE = 50


@dataclass(frozen=True)
class TraceFilters:
    outcome: str = ""
    model: str = ""
    min_client_ttft_ms: float | None = None
    window: TimeRange | None = None

    def query(self) -> dict[str, str]:
        out = {"outcome": self.outcome, "model": self.model}
        if self.min_client_ttft_ms is not None:
            out["min_ttft"] = f"{self.min_client_ttft_ms:g}"
        if self.window is not None:
            out.update(self.window.query())
        return {k: v for k, v in out.items() if v}


def trace_filters(params: Mapping[str, str], *, now: datetime) -> tuple[TraceFilters, list[str]]:
    errors: list[str] = []
    outcome = params.get("outcome", "")
    if outcome and outcome not in OUTCOMES:
        errors.append(f"unknown outcome {outcome!r}")
        outcome = ""
    min_ttft = None
    if params.get("min_ttft"):
        try:
            min_ttft = float(params["min_ttft"])
            if not min_ttft >= 0:
                raise ValueError
        except ValueError:
            errors.append("slow TTFT threshold: a number of milliseconds")
            min_ttft = None
    window = None
    if any(params.get(k) for k in ("range", "since", "until")):
        window, range_errors = time_range(params, now=now)
        errors += range_errors
    model = params.get("model", "").strip()[:128]
    return TraceFilters(outcome, model, min_ttft, window), errors


def parse_cursor(text: str) -> tuple[float, int] | None:
    """``<start_ms>_<id>`` of the last row of the previous page (keyset paging: no
    OFFSET, no COUNT)."""
    start, _, pk = text.partition("_")
    try:
        return float(start), int(pk)
    except ValueError:
        return None


def _turn(trace: Trace) -> Turn | None:
    try:
        return trace.turn
    except Turn.DoesNotExist:
        return None


def trace_rows(
    *, user: User, app: Application, filters: TraceFilters, cursor: tuple[float, int] | None
) -> tuple[list[dict[str, Any]], str]:
    """One page of traces, newest first, and the cursor of the next page ("" at the
    end). Reads the (app, start_ms) index backwards with a LIMIT."""
    traces = selectors.trace_list(
        user=user, outcome=filters.outcome or None,
        model=filters.model or None, min_client_ttft_ms=filters.min_client_ttft_ms,
        since=filters.window.since if filters.window else None,
        until=filters.window.until if filters.window else None,
    ).filter(app_id=app.pk)  # fmt: skip
    # By id, not app_slug: a join on the slug hides the application from the planner,
    # which then sorts every trace (1 s at 2 million) instead of walking the index.
    if cursor is not None:
        start, pk = cursor
        traces = traces.filter(Q(start_ms__lt=start) | Q(start_ms=start, id__lt=pk))
    page = list(traces[: PAGE_SIZE + 1])
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    rows = []
    for trace in page:
        turn = _turn(trace)
        rows.append({
            "trace_id": trace.trace_id,
            "start": when(trace.start_ms),
            "state": trace.state,
            "linked": trace.linked,
            "propagation": trace.propagation_cause or trace.propagation,
            "spans": trace.span_count,
            "outcome": turn.outcome if turn else "",
            "model": turn.model if turn else "",
            "client_ttft": fmt_ms(turn.client_ttft_ms) if turn else DASH,
            "server_ttft": fmt_ms(turn.server_ttft_ms) if turn else DASH,
            "model_ttft": fmt_ms(turn.model_ttft_ms) if turn else DASH,
            "session_pk": turn.session_id if turn else None,
        })  # fmt: skip
    next_cursor = f"{page[-1].start_ms!r}_{page[-1].id}" if more and page else ""
    return rows, next_cursor


# --- one trace: the waterfall -----------------------------------------------------

SPAN_LIMIT = 1000
ROLE_ORDER = {"browser": 0, "gateway": 1, "model": 2, "service": 3}
SPAN_KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer",
              5: "consumer"}  # fmt: skip
SPAN_STATUS = {0: "unset", 1: "ok", 2: "error"}


def find_trace(*, user: User, trace_id: str, app_slug: str | None = None) -> Trace:
    trace = selectors.trace_detail(user=user, trace_id=trace_id.lower(), app_slug=app_slug)
    if trace is None:
        raise Http404("no stitched trace with this id in your applications (yet)")
    return trace


def trace_spans(trace: Trace) -> list[Span]:
    """The trace's spans by start, with a limit: a runaway trace of many thousand
    spans still renders."""
    return selectors.trace_spans(trace, limit=SPAN_LIMIT)


def tree_order(spans: Sequence[Span]) -> list[tuple[Span, int]]:
    """Spans depth first (children under their parent, each level by start), with
    their depth. A span whose parent is not here is a root."""
    ids = {s.span_id for s in spans}
    children: dict[str, list[Span]] = {}
    roots = []
    for span in spans:
        if (
            span.parent_span_id
            and span.parent_span_id in ids
            and span.parent_span_id != span.span_id
        ):
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    out: list[tuple[Span, int]] = []
    seen: set[str] = set()

    def walk(span: Span, depth: int) -> None:
        if span.span_id in seen:  # a malformed parent cycle
            return
        seen.add(span.span_id)
        out.append((span, depth))
        for child in sorted(children.get(span.span_id, []), key=lambda s: (s.start_ns, s.span_id)):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda s: (ROLE_ORDER.get(s.role, 9), s.start_ns, s.span_id)):
        walk(root, 0)
    for span in spans:  # anything only reachable through a cycle
        if span.span_id not in seen:
            walk(span, 0)
    return out


def display_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def wait_parts(turn: Turn) -> list[tuple[str, float | None]]:
    """The client's wait for the first token, split (ms): client + network is what
    the gateway did not see (network_overhead_ms), the gateway's part is its TTFT
    less the model's, then the model server's queue and its own time to first token."""
    if turn.server_ttft_ms is None:
        return [("client + network (no server spans)", turn.client_ttft_ms)]
    gateway = turn.server_ttft_ms
    model = None
    if turn.model_ttft_ms is not None:
        gateway = turn.server_ttft_ms - turn.model_ttft_ms
        model = turn.model_ttft_ms - (turn.queue_ms or 0.0)
    return [
        ("client + network", turn.network_overhead_ms),
        ("gateway", gateway),
        ("queue", turn.queue_ms),
        ("model", model),
    ]


def ttft_marks(turn: Turn | None, spans: Sequence[Span]) -> list[tuple[str, float]]:
    """Where each first token happened on the trace's timeline (epoch ms)."""
    if turn is None:
        return []
    marks = []
    browser = next((s for s in spans if s.role == "browser" and s.span_id == turn.span_id), None)
    if browser is not None and turn.client_ttft_ms is not None:
        marks.append(("client first token", browser.start_ns / 1e6 + turn.client_ttft_ms))
    gateway = gateway_server_span(spans, turn.span_id)  # type: ignore[arg-type]
    if gateway is not None and turn.server_ttft_ms is not None:
        marks.append(("server first token", gateway.start_ns / 1e6 + turn.server_ttft_ms))
    models = model_spans(spans)  # type: ignore[arg-type]
    if models and turn.model_ttft_ms is not None:
        marks.append(("model first token", models[0].start_ns / 1e6 + turn.model_ttft_ms))
    return marks


def trace_view(trace: Trace) -> dict[str, Any]:
    spans = trace_spans(trace)
    turn = _turn(trace)
    ordered = tree_order(spans)
    marks = ttft_marks(turn, spans)
    rows = [
        charts.WaterfallRow(
            label=f"{span.service or span.role}: {span.name}", depth=depth, role=span.role,
            start_ms=span.start_ns / 1e6, end_ms=span.end_ns / 1e6,
            error=span.status_code == 2,
            # The browser span sits where the skew estimate put it, give or take this.
            uncertainty_ms=(trace.clock_skew_uncertainty_ms or 0.0)
            if span.role == "browser" else 0.0,
        )
        for span, depth in ordered
    ]  # fmt: skip
    t0 = min([r.start_ms for r in rows], default=trace.start_ms)
    details = []
    for span, depth in ordered:
        details.append({
            "span": span,
            "depth": depth,
            "kind": SPAN_KINDS.get(span.kind, str(span.kind)),
            "status": SPAN_STATUS.get(span.status_code, str(span.status_code)),
            "offset": fmt_ms(span.start_ns / 1e6 - t0),
            "duration": fmt_ms((span.end_ns - span.start_ns) / 1e6),
            "attributes": sorted((k, display_value(v)) for k, v in span.attributes.items()),
            "resource": sorted((k, display_value(v)) for k, v in span.resource.items()),
            "events": [
                (display_value(e.get("name", "")),
                 fmt_ms(int(e["time_ns"]) / 1e6 - t0) if e.get("time_ns") else DASH,
                 sorted((k, display_value(v)) for k, v in (e.get("attributes") or {}).items()))
                for e in span.events if isinstance(e, dict)
            ],
        })  # fmt: skip
    turn_figures = []
    if turn is not None:
        turn_figures = [
            Figure(key, label, fmt_ms(getattr(turn, key)))
            for key, label in (
                ("client_ttft_ms", "Client TTFT"), ("server_ttft_ms", "Server TTFT"),
                ("model_ttft_ms", "Model TTFT"), ("queue_ms", "Queue"),
                ("network_overhead_ms", "Network overhead"), ("tbt_p50_ms", "TBT p50"),
                ("tbt_p95_ms", "TBT p95"), ("tbt_max_ms", "TBT max"), ("tpot_ms", "TPOT"),
            )
        ] + [
            Figure("input_tokens", "Tokens in", fmt_number(turn.input_tokens)),
            Figure("output_tokens", "Tokens out", fmt_number(turn.output_tokens)),
        ]  # fmt: skip
    return {
        "trace": trace,
        "turn": turn,
        "start": when(trace.start_ms),
        "duration": fmt_ms(trace.end_ms - trace.start_ms),
        "turn_figures": turn_figures,
        "waterfall": charts.waterfall(title=f"Trace {trace.trace_id}", rows=rows, marks=marks),
        "wait": charts.stacked_bar(title="Where the wait for the first token went",
                                   parts=wait_parts(turn), width=1000) if turn else None,
        "wait_parts": [(name, fmt_ms(v)) for name, v in wait_parts(turn)] if turn else [],
        "marks": [(name, fmt_ms(at - t0)) for name, at in marks],
        "spans": details,
        "truncated": len(spans) >= SPAN_LIMIT,
    }  # fmt: skip


# --- one session ------------------------------------------------------------------

TURN_LIMIT = 500
EVENT_LIMIT = 1000


def find_session(*, user: User, key: str, app_slug: str | None = None) -> BrowserSession:
    """By the browser's session id, else (all digits) by primary key; only in the
    applications this user may see."""
    sessions = BrowserSession.objects.filter(app__in=selectors.visible_applications(user))
    if app_slug:
        sessions = sessions.filter(app__slug=app_slug)
    found = list(sessions.filter(session_id=key).select_related("app")[:2])
    if len(found) != 1 and key.isdigit():
        found = list(sessions.filter(pk=int(key)).select_related("app")[:1])
    if len(found) != 1:
        raise Http404("no such session in your applications")
    return found[0]


def _event_details(event: BrowserEvent) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    skip = ("id", "type", "ts", "name", "turn_span_id")
    extra = {k: v for k, v in data.items() if k not in skip and v not in (None, "", {}, [])}
    return ", ".join(f"{k}={display_value(v)}" for k, v in sorted(extra.items()))


def session_view(session: BrowserSession) -> dict[str, Any]:
    """The session's turns in order, grouped by conversation, each conversation with
    its actions and feedback in time order (browser times moved by the turn's clock
    skew, so they sit on the turns' timeline)."""
    turns = list(
        Turn.objects.filter(session=session)
        .select_related("trace")
        .order_by("t_send_ms", "id")[:TURN_LIMIT]
    )
    events = list(
        BrowserEvent.objects.filter(session=session)
        .exclude(type__in=[BrowserEvent.Type.TURN, BrowserEvent.Type.VITAL])
        .order_by("ts_ms", "id")[:EVENT_LIMIT]
    )
    by_span = {t.span_id: t for t in turns}
    default_skew = turns[0].trace.clock_skew_ms if turns else 0.0
    conversations: dict[str, list[dict[str, Any]]] = {}
    for turn in turns:
        conversations.setdefault(turn.conversation_id, []).append({
            "kind": "turn", "at": turn.t_send_ms, "time": when(turn.t_send_ms), "turn": turn,
            "client_ttft": fmt_ms(turn.client_ttft_ms), "server_ttft": fmt_ms(turn.server_ttft_ms),
            "model_ttft": fmt_ms(turn.model_ttft_ms), "trace_id": turn.trace.trace_id,
        })  # fmt: skip
    loose = []
    for event in events:
        turn = by_span.get(event.turn_span_id)
        at = event.ts_ms + (turn.trace.clock_skew_ms if turn else default_skew)
        item = {
            "kind": event.type, "at": at, "time": when(at), "name": event.name,
            "details": _event_details(event), "turn_span_id": event.turn_span_id,
        }  # fmt: skip
        if turn is not None:
            conversations[turn.conversation_id].append(item)
        else:
            loose.append(item)
    for items in conversations.values():
        items.sort(key=lambda item: (item["at"], item["kind"] != "turn"))
    return {
        "session": session,
        "conversations": list(conversations.items()),
        "loose_events": loose,
        "turn_count": len(turns),
        "truncated": len(turns) >= TURN_LIMIT or len(events) >= EVENT_LIMIT,
    }


# --- propagation health ------------------------------------------------------------

UNLINKED_LIMIT = 50
ADVICE = {
    "cors_preflight_failed": (
        "The browser's CORS preflight to your API failed, so the chat request never left "
        "with its trace header. Add the chat page's origin to the API's CORS allow-list and "
        "traceparent, tracestate and baggage to Access-Control-Allow-Headers "
        "(llmrum_django: LLMRUM_CORS_ALLOWED_ORIGINS; it allows the trace headers itself)."
    ),
    "backend_not_instrumented_or_header_not_forwarded": (
        "The request went out but no span of this trace reached llmrum. Check that the "
        "API's URL is in the snippet's tracePropagationTargets, that every proxy and load "
        "balancer in front of the gateway forwards the traceparent header, and that the "
        "gateway exports OTLP to /v1/traces with this application's ingest token."
    ),
    "browser_beacon_missing": (
        "Server spans continue a browser span whose beacon never arrived: the snippet did "
        "not report (page origin not in the application's allowed origins, an ad blocker, "
        "the tab closed before the flush, or client-side sampling)."
    ),
    "no_traceparent_from_browser": (
        "The trace began on the server: the request reached the gateway without a "
        "traceparent. Add the API's URL to tracePropagationTargets and its path to "
        "chatUrls, or this is server-to-server traffic that has no browser side."
    ),
    "no_browser_root": (
        "Server spans arrived with no browser turn in the trace: either the snippet did "
        "not report this request, or the request did not come from a page with the "
        "snippet (server-to-server traffic, scripts, health checks)."
    ),
    "not_descending": (
        "Both sides arrived but the server spans do not descend from the browser span: "
        "something between them started a new span tree instead of continuing the "
        "incoming traceparent (a proxy or middleware replacing the parent id)."
    ),
}


def propagation_summary(*, app: Application, window: TimeRange) -> dict[str, Any]:
    """Turns linked to server spans, and the unlinked ones by likely cause, over the
    window: from rollups (``figures.propagation_health``), like the overview."""
    health = figures.propagation_health(app=app, since=window.since, until=window.until)
    turns, linked = health["turns"], health["linked_turns"]
    return {
        "app": app,
        "turns": turns,
        "linked": linked,
        "unlinked": turns - linked,
        "server_only": health["server_only_traces"],
        "share": fmt_rate(linked / turns if turns else None),
        "causes": [
            {"cause": name, "count": n, "advice": ADVICE.get(name, "")}
            for name, n in sorted(
                health["unlinked_by_cause"].items(), key=lambda kv: (-kv[1], kv[0])
            )
        ],
    }


def unlinked_traces(*, app: Application, window: TimeRange) -> list[dict[str, Any]]:
    traces = (
        Trace.objects.filter(
            app=app,
            linked=False,
            start_ms__gte=window.since.timestamp() * 1000,
            start_ms__lt=window.until.timestamp() * 1000,
        )
        .select_related("turn")
        .order_by("-start_ms", "-id")[:UNLINKED_LIMIT]
    )
    rows = []
    for trace in traces:
        turn = _turn(trace)
        rows.append({
            "trace_id": trace.trace_id, "start": when(trace.start_ms),
            "side": "browser only" if trace.propagation == Trace.Propagation.NO_SERVER_SPANS
                    else "server only" if trace.propagation == Trace.Propagation.NO_BROWSER_ROOT
                    else "both, not linked",
            "cause": trace.propagation_cause or "not_descending",
            "outcome": turn.outcome if turn else "", "spans": trace.span_count,
        })  # fmt: skip
    return rows
