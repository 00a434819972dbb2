"""The overview page: every figure from ``analytics.figures`` (totals and every split
in one read, and the charts' series), which answers from rollups at scale."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from operator import getitem
from typing import Any, cast

from django.utils.safestring import SafeString

from correlator.analytics import figures
from correlator.analytics.exact import rate
from correlator.reports import charts
from correlator.reports.format import Figure, fmt_ms, fmt_number, fmt_rate, fmt_usd
from correlator.reports.forms import TimeRange
from rumserver.models import Application

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


def _cost_row(group: dict[str, Any]) -> dict[str, str]:
    """A model's cost, its mean per conversation, and its turns with no price."""
    return {
        "key": str(group["key"]) or "(unknown)",
        "turns": fmt_number(group["turns"]),
        "cost": fmt_usd(group["cost_usd"]),
        "per_conversation": fmt_usd(rate(group["cost_usd"], group["conversations"])),
        "unpriced_turns": fmt_number(group["cost_unpriced_turns"]),
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
        Figure("cost_usd", "Cost", fmt_usd(totals["cost_usd"])),
        Figure(
            "cost_per_conversation",
            "Cost per conversation",
            fmt_usd(rate(totals["cost_usd"], totals["conversations"])),
        ),
        Figure(
            "cost_unpriced_turns",
            "Turns with no price (cost nothing)",
            fmt_number(totals["cost_unpriced_turns"]),
        ),
    ]
    latencies = [
        {"key": key, "label": label}
        | {q: fmt_ms(totals[key][q]) for q in ("p50", "p75", "p95", "p99")}
        for key, label in LATENCIES
    ]
    rates = [Figure(key, label, fmt_rate(totals["rates"][key])) for key, label in RATES]

    labels = [_x_label(point["since"], window) for point in series]
    drawn: list[tuple[str, SafeString]] = []

    def line(title: str, lines: list[charts.Series], unit: str = "ms") -> None:
        drawn.append(
            (title, charts.line_chart(title=title, x_labels=labels, series=lines, unit=unit))
        )

    def bars(title: str, bar_labels: list[str], groups: list[charts.Series]) -> None:
        drawn.append((title, charts.bar_chart(title=title, labels=bar_labels, series=groups)))

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
    bars("Turns", labels, [over_time("turns", "turns")])
    models = grouped["model"]["groups"]
    bars(
        "Tokens in and out per model",
        [str(g["key"]) or "(unknown)" for g in models],
        [
            charts.Series("tokens in", [g["input_tokens"] for g in models]),
            charts.Series("tokens out", [g["output_tokens"] for g in models]),
        ],
    )
    groups = [
        {"key": key, "label": label, "rows": [_group_row(g) for g in grouped[key]["groups"]]}
        for key, label in GROUPS.items()
    ]
    costs = [_cost_row(g) for g in models]
    return Overview(
        app, window, cards, latencies, rates, drawn, groups, costs, percentiles_note(totals)
    )
