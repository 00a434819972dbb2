"""Propagation health: how many turns link to server spans, the unlinked of both
sides by likely cause with advice, and the latest unlinked traces."""

from __future__ import annotations

from typing import Any

from correlator import selectors
from correlator.analytics import figures
from correlator.models import Trace
from correlator.reports.format import fmt_rate, when
from correlator.reports.forms import TimeRange
from rumserver.models import Application

UNLINKED_LIMIT = 50
# Which side of an unlinked trace arrived ("both, not linked" when neither is missing).
# Keyed by plain str: a trace's propagation column reads back as one.
SIDES: dict[str, str] = {
    Trace.Propagation.NO_SERVER_SPANS: "browser only",
    Trace.Propagation.NO_BROWSER_ROOT: "server only",
}
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
    unlinked = Trace.objects.filter(
        app=app,
        linked=False,
        start_ms__gte=window.since.timestamp() * 1000,
        start_ms__lt=window.until.timestamp() * 1000,
    ).order_by("-start_ms", "-id")
    traces = selectors.with_turns(list(unlinked[:UNLINKED_LIMIT]))
    rows = []
    for trace in traces:
        turn = trace.turn_or_none
        rows.append(
            {
                "trace_id": trace.trace_id,
                "start": when(trace.start_ms),
                "side": SIDES.get(trace.propagation, "both, not linked"),
                "cause": trace.propagation_cause or "not_descending",
                "outcome": turn.outcome if turn else "",
                "spans": trace.span_count,
            }
        )
    return rows
