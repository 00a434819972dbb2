"""The overview page: every figure from ``analytics.figures`` (totals and every split
in one read, and the charts' series), which answers from rollups at scale.

Headline figures leave bots out unless asked (``bots``), and sit beside the same
figures of the previous period of equal length (one more rollup read). Every chart
point, bar and breakdown row links to the trace list of its time bucket and key."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from operator import getitem
from typing import Any, cast
from urllib.parse import urlencode

from django.urls import reverse
from django.utils.safestring import SafeString

from correlator.analytics import figures
from correlator.analytics.exact import rate
from correlator.reports import charts
from correlator.reports.format import Figure, change, fmt_ms, fmt_number, fmt_rate, fmt_usd
from correlator.reports.forms import TimeRange
from rumserver.models import Application, BrowserSession

GROUPS = {"model": "Model", "browser": "Browser", "os": "OS", "device": "Device class"}
LATENCIES = [
    ("client_ttft_ms", "Client TTFT (what the user waits)"),
    ("server_ttft_ms", "Server TTFT (gateway)"),
    ("model_ttft_ms", "Model TTFT"),
    ("queue_ms", "Queue (model server)"),
    ("tbt_ms", "TBT (time between tokens)"),
    ("tpot_ms", "TPOT (time per output token)"),
]
# The overview's charts: (series name, figure) of the TTFT lines, (rate, series name)
# of the rate lines.
TTFT_LINES = (
    ("client", "client_ttft_ms"),
    ("server", "server_ttft_ms"),
    ("model", "model_ttft_ms"),
)
RATE_LINES = (
    ("stop_rate", "stop"),
    ("regenerate_rate", "regenerate"),
    ("abandonment_rate", "abandon"),
    ("error_rate", "error"),
)
RATES = [
    ("stop_rate", "Stop rate"),
    ("regenerate_rate", "Regenerate rate"),
    ("abandonment_rate", "Abandonment rate"),
    ("abandonment_before_first_token_rate", "Abandoned before first token"),
    ("error_rate", "Error rate"),
    ("first_response_accuracy", "First-response accuracy"),
    ("hallucination_rate", "Hallucination rate"),
]


# The headline cards: (key, label, the value from a metrics answer, its format).
CARDS: list[tuple[str, str, Any, Any]] = [
    ("turns", "Turns", lambda t: t["turns"], fmt_number),
    ("sessions", "Sessions", lambda t: t["sessions"], fmt_number),
    ("conversations", "Conversations", lambda t: t["conversations"], fmt_number),
    ("turns_per_session", "Turns per session", lambda t: t["turns_per_session"], fmt_number),
    (
        "intent_corrections",
        "Intent corrections per conversation",
        lambda t: t["intent_corrections_per_conversation"],
        fmt_number,
    ),
    ("input_tokens", "Tokens in", lambda t: t["input_tokens"], fmt_number),
    ("output_tokens", "Tokens out", lambda t: t["output_tokens"], fmt_number),
    ("cost_usd", "Cost", lambda t: t["cost_usd"], fmt_usd),
    (
        "cost_per_conversation",
        "Cost per conversation",
        lambda t: rate(t["cost_usd"], t["conversations"]),
        fmt_usd,
    ),
    (
        "cost_unpriced_turns",
        "Turns with no price (cost nothing)",
        lambda t: t["cost_unpriced_turns"],
        fmt_number,
    ),
]
QUANTILE_COLUMNS = ("p50", "p75", "p95", "p99")

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
    costs: list[dict[str, str]] = field(default_factory=list)
    percentiles_note: str = PERCENTILES_EXACT
    previous: TimeRange | None = None  # the period the headline figures are compared with
    bots: bool = False  # whether the headline figures and charts count bot turns
    bot_turns: int = 0  # bot turns in the window (the device split's "bot" row)
    server_only: dict[str, Any] = field(default_factory=dict)  # ``server_only_section``


def _x_label(at: datetime, window: TimeRange) -> str:
    if window.until - window.since <= timedelta(days=1):
        return at.strftime("%H:%M")
    if window.step >= timedelta(days=1):
        return at.strftime("%b %d")
    return at.strftime("%b %d %H:%M")


def traces_url(app: Application, since: datetime, until: datetime, **keys: str) -> str:
    """The trace list of this application in [since, until) with these filters: where
    a chart point, bar or breakdown row leads (explicit times, not a preset, so the
    link keeps its bucket when followed later)."""
    query = {"app": app.slug, "since": since.isoformat(), "until": until.isoformat(), **keys}
    return f"{reverse('reports:traces')}?{urlencode(query)}"


def _drill_key(group_by: str, key: str) -> dict[str, str] | None:
    """The trace list filter of a breakdown row; None when the list cannot filter by
    it (an unknown key is stored empty, which the filters read as no filter)."""
    if not key or (group_by == "device" and key not in BrowserSession.Device.values):
        return None
    return {group_by: key}


def previous_period(window: TimeRange) -> TimeRange:
    """The period of the same length just before ``window``."""
    length = window.until - window.since
    return TimeRange(window.since - length, window.since, "", window.step)


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


def _cost_row(group: dict[str, Any]) -> dict[str, str]:
    """A model's cost, its mean per conversation, and its turns with no price."""
    return {
        "key": str(group["key"]) or "(unknown)",
        "turns": fmt_number(group["turns"]),
        "cost": fmt_usd(group["cost_usd"]),
        "per_conversation": fmt_usd(rate(group["cost_usd"], group["conversations"])),
        "unpriced_turns": fmt_number(group["cost_unpriced_turns"]),
    }


def server_only_section(app: Application, window: TimeRange) -> dict[str, Any]:
    """Traffic with no browser root (API clients, server-to-server calls), formatted:
    how many traces, the entry's server TTFT p50 and p95, and both by model; with the
    propagation page of the window, which lists them."""
    answer = figures.server_only(app=app, since=window.since, until=window.until)
    query = urlencode({"app": app.slug, **window.query()})
    return {
        "count": answer["traces"],
        "traces": fmt_number(answer["traces"]),
        "p50": fmt_ms(answer["server_ttft_ms"]["p50"]),
        "p95": fmt_ms(answer["server_ttft_ms"]["p95"]),
        "rows": [
            {
                "key": str(g["key"]) or "(unknown)",
                "traces": fmt_number(g["traces"]),
                "p50": fmt_ms(g["server_ttft_ms"]["p50"]),
                "p95": fmt_ms(g["server_ttft_ms"]["p95"]),
            }
            for g in answer["groups"]
        ],
        "url": f"{reverse('reports:propagation')}?{query}",
    }


def _latency_row(
    key: str, label: str, now: dict[str, Any], before: dict[str, Any]
) -> dict[str, Any]:
    """A latency table row: each quantile now, and the previous period's with the change."""
    row: dict[str, Any] = {"key": key, "label": label, "previous": {}}
    for q in QUANTILE_COLUMNS:
        row[q] = fmt_ms(now[key][q])
        moved = change(now[key][q], before[key][q])
        row["previous"][q] = fmt_ms(before[key][q]) + (f", {moved}" if moved else "")
    return row


def overview(*, app: Application, window: TimeRange, bots: bool = False) -> Overview:
    """Every figure of the overview, from ``window_breakdown`` (totals and every split
    in one read, and the previous period's totals in another) and ``window_series``
    (the charts) only. Without ``bots``, the totals and charts leave bot turns out;
    the splits keep them (their device class is "bot")."""
    grouped = figures.window_breakdown(
        app=app, since=window.since, until=window.until, group_bys=list(GROUPS), bots=bots
    )
    totals = grouped["model"]  # every grouped answer carries the window's totals too
    previous = previous_period(window)
    before = figures.window_breakdown(
        app=app, since=previous.since, until=previous.until, group_bys=["device"], bots=bots
    )["device"]
    series = figures.window_series(
        app=app, since=window.since, until=window.until, step=window.step, bots=bots
    )
    cards = []
    for key, label, value_of, fmt in CARDS:
        now, then = value_of(totals), value_of(before)
        cards.append(Figure(key, label, fmt(now), fmt(then), change(now, then)))
    latencies = [_latency_row(key, label, totals, before) for key, label in LATENCIES]
    rates = [
        Figure(
            key,
            label,
            fmt_rate(totals["rates"][key]),
            fmt_rate(before["rates"][key]),
            change(totals["rates"][key], before["rates"][key], points=True),
        )
        for key, label in RATES
    ]

    labels = [_x_label(point["since"], window) for point in series]
    point_links = [traces_url(app, point["since"], point["until"]) for point in series]
    drawn: list[tuple[str, SafeString]] = []

    def line(title: str, lines: list[charts.Series], unit: str = "ms") -> None:
        drawn.append(
            (
                title,
                charts.line_chart(
                    title=title, x_labels=labels, series=lines, unit=unit, links=point_links
                ),
            )
        )

    def bars(
        title: str, bar_labels: list[str], groups: list[charts.Series], links: list[str]
    ) -> None:
        drawn.append(
            (
                title,
                charts.bar_chart(title=title, labels=bar_labels, series=groups, links=links),
            )
        )

    def over_time(name: str, *path: str) -> charts.Series:
        """One figure of every point of the series, found by its keys."""
        return charts.Series(
            name, [cast("float | None", reduce(getitem, path, point)) for point in series]
        )

    for q in ("p50", "p75", "p95"):
        line(
            f"Time to first token, {q}: client next to server and model",
            [over_time(name, key, q) for name, key in TTFT_LINES],
        )
    line(
        "Time between tokens and time per output token (p50, p95)",
        [
            over_time(f"{name} {q}", key, q)
            for name, key in (("TBT", "tbt_ms"), ("TPOT", "tpot_ms"))
            for q in ("p50", "p95")
        ],
    )
    line(
        "Stop, regenerate, abandonment and error rates",
        [over_time(label, "rates", key) for key, label in RATE_LINES],
        unit="%",
    )
    bars("Turns", labels, [over_time("turns", "turns")], point_links)
    models = grouped["model"]["groups"]

    def drill(group_by: str, key: object) -> str:
        keys = _drill_key(group_by, str(key))
        return traces_url(app, window.since, window.until, **keys) if keys is not None else ""

    bars(
        "Tokens in and out per model",
        [str(g["key"]) or "(unknown)" for g in models],
        [
            charts.Series("tokens in", [g["input_tokens"] for g in models]),
            charts.Series("tokens out", [g["output_tokens"] for g in models]),
        ],
        [drill("model", g["key"]) for g in models],
    )
    groups = [
        {
            "key": key,
            "label": label,
            "rows": [_group_row(g) | {"url": drill(key, g["key"])} for g in grouped[key]["groups"]],
        }
        for key, label in GROUPS.items()
    ]
    bot_turns = sum(g["turns"] for g in grouped["device"]["groups"] if g["key"] == "bot")
    costs = [_cost_row(g) | {"url": drill("model", g["key"])} for g in models]
    return Overview(
        app,
        window,
        cards,
        latencies,
        rates,
        drawn,
        groups,
        costs,
        percentiles_note(totals),
        previous=previous,
        bots=bots,
        bot_turns=bot_turns,
        server_only=server_only_section(app, window),
    )
