"""One trace: its waterfall (spans in tree order on one timeline, the first-token
marks), where the wait for the first token went, and every span's details."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.http import Http404

from correlator import selectors
from correlator.models import Trace, Turn
from correlator.reports import charts
from correlator.reports.format import DASH, Figure, display_value, fmt_ms, fmt_number, when
from correlator.reports.forms import User
from correlator.stitch.rules import gateway_server_span, model_spans
from rumserver.models import Span

SPAN_LIMIT = 1000
ROLE_ORDER = {"browser": 0, "gateway": 1, "model": 2, "service": 3}
SPAN_KINDS = {
    0: "unspecified",
    1: "internal",
    2: "server",
    3: "client",
    4: "producer",
    5: "consumer",
}
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
    gateway = gateway_server_span(spans, turn.span_id)
    if gateway is not None and turn.server_ttft_ms is not None:
        marks.append(("server first token", gateway.start_ns / 1e6 + turn.server_ttft_ms))
    models = model_spans(spans)
    if models and turn.model_ttft_ms is not None:
        marks.append(("model first token", models[0].start_ns / 1e6 + turn.model_ttft_ms))
    return marks


def trace_view(trace: Trace) -> dict[str, Any]:
    spans = trace_spans(trace)
    turn = trace.turn_or_none
    ordered = tree_order(spans)
    marks = ttft_marks(turn, spans)
    # The browser span sits where the skew estimate put it, give or take this.
    browser_uncertainty = trace.clock_skew_uncertainty_ms or 0.0
    rows = [
        charts.WaterfallRow(
            label=f"{span.service or span.role}: {span.name}",
            depth=depth,
            role=span.role,
            start_ms=span.start_ns / 1e6,
            end_ms=span.end_ns / 1e6,
            error=span.status_code == 2,
            uncertainty_ms=browser_uncertainty if span.role == "browser" else 0.0,
        )
        for span, depth in ordered
    ]
    t0 = min([r.start_ms for r in rows], default=trace.start_ms)
    details = []
    for span, depth in ordered:
        details.append(
            {
                "span": span,
                "depth": depth,
                "kind": SPAN_KINDS.get(span.kind, str(span.kind)),
                "status": SPAN_STATUS.get(span.status_code, str(span.status_code)),
                "offset": fmt_ms(span.start_ns / 1e6 - t0),
                "duration": fmt_ms((span.end_ns - span.start_ns) / 1e6),
                "attributes": sorted((k, display_value(v)) for k, v in span.attributes.items()),
                "resource": sorted((k, display_value(v)) for k, v in span.resource.items()),
                "events": [
                    (
                        display_value(e.get("name", "")),
                        fmt_ms(int(e["time_ns"]) / 1e6 - t0) if e.get("time_ns") else DASH,
                        sorted(
                            (k, display_value(v)) for k, v in (e.get("attributes") or {}).items()
                        ),
                    )
                    for e in span.events
                    if isinstance(e, dict)
                ],
            }
        )
    turn_figures = []
    if turn is not None:
        turn_figures = [
            Figure(key, label, fmt_ms(getattr(turn, key)))
            for key, label in (
                ("client_ttft_ms", "Client TTFT"),
                ("server_ttft_ms", "Server TTFT"),
                ("model_ttft_ms", "Model TTFT"),
                ("queue_ms", "Queue"),
                ("network_overhead_ms", "Network overhead"),
                ("tbt_p50_ms", "TBT p50"),
                ("tbt_p95_ms", "TBT p95"),
                ("tbt_max_ms", "TBT max"),
                ("tpot_ms", "TPOT"),
            )
        ] + [
            Figure("input_tokens", "Tokens in", fmt_number(turn.input_tokens)),
            Figure("output_tokens", "Tokens out", fmt_number(turn.output_tokens)),
        ]
    regenerated_by, regenerates = selectors.regeneration_links(turn) if turn else ("", "")
    parts = wait_parts(turn) if turn else []
    wait = None
    if turn is not None:
        wait = charts.stacked_bar(
            title="Where the wait for the first token went", parts=parts, width=1000
        )
    return {
        "trace": trace,
        "turn": turn,
        "start": when(trace.start_ms),
        "duration": fmt_ms(trace.end_ms - trace.start_ms),
        "turn_figures": turn_figures,
        "regenerated_by": regenerated_by,
        "regenerates": regenerates,
        "waterfall": charts.waterfall(title=f"Trace {trace.trace_id}", rows=rows, marks=marks),
        "wait": wait,
        "wait_parts": [(name, fmt_ms(v)) for name, v in parts],
        "marks": [(name, fmt_ms(at - t0)) for name, at in marks],
        "spans": details,
        "scores": [
            {
                "name": s.name,
                "value": fmt_number(s.value),
                "comment": s.comment,
                "created": when(s.received_at),
            }
            for s in selectors.trace_scores(trace)
        ],
        "truncated": len(spans) >= SPAN_LIMIT,
    }
