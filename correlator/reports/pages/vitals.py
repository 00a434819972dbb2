"""The Web Vitals page: LCP, INP, CLS, FCP and TTFB at p75 by page path and device
class, and over time by device class for one page or all.

It reads the application's vital events of the range through their own index
(``event_vital_error_received``), newest first and at most ``ROW_LIMIT`` of them,
and takes nearest-rank percentiles of their values: a web-vitals metric reported
again updates its row (the SDK uses the metric's id as the event id), so each row is
one page load's latest value."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from django.db.models.fields.json import KT
from django.utils.safestring import SafeString

from correlator.reports import charts
from correlator.reports.format import DASH, cut_note, fmt_number
from correlator.reports.forms import TimeRange
from correlator.reports.pages.browser_events import range_events, received, session_values
from correlator.reports.pages.overview import _x_label as x_label
from correlator.stitch.rules import nearest_rank
from rumserver.models import Application, BrowserEvent

ROW_LIMIT = 20_000  # vital reports read for one page view, the newest (~0.3 s of reading)
TABLE_LIMIT = 50  # (page path, device) rows, the most measured first
# name: (title, unit, good up to, poor above): web.dev's thresholds at p75.
VITALS: dict[str, tuple[str, str, float, float]] = {
    "LCP": ("Largest Contentful Paint", "ms", 2500, 4000),
    "INP": ("Interaction to Next Paint", "ms", 200, 500),
    "CLS": ("Cumulative Layout Shift", "", 0.1, 0.25),
    "FCP": ("First Contentful Paint", "ms", 1800, 3000),
    "TTFB": ("Time to First Byte", "ms", 800, 1800),
}
P75 = 0.75


class VitalSample(NamedTuple):  # a tuple: 20,000 of them are made for one page view
    name: str
    value: float
    path: str
    device: str
    received_at: datetime


@lru_cache(maxsize=4096)  # a page load reports up to five vitals from one URL
def page_path(url: str) -> str:
    """The path of a page URL, without its query and fragment (which carry ids and
    tokens, and would split one page into thousands)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return "(unparsable URL)"
    return path or "/"


def vital_samples(*, app: Application, window: TimeRange) -> tuple[list[VitalSample], bool]:
    """The range's vital reports, newest first, and whether ``ROW_LIMIT`` cut them."""
    when, as_datetime = received()
    rows = list(
        range_events(app=app, type=BrowserEvent.Type.VITAL, window=window).values_list(
            "name", KT("data__value"), KT("data__page_url"), "session_id", when
        )[: ROW_LIMIT + 1]
    )
    devices = session_values((row[3] for row in rows[:ROW_LIMIT]), "device_class")
    samples = []
    for name, value, url, session_pk, received_at in rows[:ROW_LIMIT]:
        device = devices.get(session_pk, "")
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        samples.append(
            VitalSample(name, number, page_path(url or ""), device, as_datetime(received_at))
        )
    return samples, len(rows) > ROW_LIMIT


def p75(values: list[float]) -> float | None:
    return nearest_rank(values, P75)


def fmt_vital(name: str, value: float | None) -> str:
    if value is None:
        return DASH
    unit = VITALS[name][1]
    return f"{value:.3f}" if not unit else f"{fmt_number(round(value))} {unit}"


def rating(name: str, value: float | None) -> str:
    """good, needs-improvement or poor (web.dev's words), blank without a value."""
    if value is None:
        return ""
    _, _, good, poor = VITALS[name]
    return "good" if value <= good else "poor" if value > poor else "needs-improvement"


def _cell(name: str, values: list[float]) -> dict[str, Any]:
    value = p75(values)
    return {
        "name": name,
        "value": fmt_vital(name, value),
        "rating": rating(name, value),
        "count": len(values),
    }


def by_page_and_device(samples: list[VitalSample]) -> list[dict[str, Any]]:
    """One row per (page path, device class): each vital's p75 and sample count, the
    most measured rows first."""
    grouped: dict[tuple[str, str], dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for s in samples:
        grouped[(s.path, s.device)][s.name].append(s.value)
    rows: list[dict[str, Any]] = [
        {
            "path": path,
            "device": device or "(unknown)",
            "samples": sum(len(v) for v in values.values()),
            "cells": [_cell(name, values.get(name, [])) for name in VITALS],
        }
        for (path, device), values in grouped.items()
    ]
    rows.sort(key=lambda r: (-r["samples"], r["path"], r["device"]))
    return rows[:TABLE_LIMIT]


def step_count(window: TimeRange) -> int:
    """The chart's points: the range's steps, the last one possibly partial."""
    return max(1, -(-(window.until - window.since) // window.step))


def over_time(samples: list[VitalSample], window: TimeRange) -> dict[str, list[charts.Series]]:
    """Per vital, a p75 line per device class over the range's steps (None where a
    step has no report)."""
    steps = step_count(window)
    buckets: dict[str, dict[str, list[list[float]]]] = {name: {} for name in VITALS}
    for s in samples:
        if s.name not in buckets:
            continue
        i = min(int((s.received_at - window.since) / window.step), steps - 1)
        devices, device = buckets[s.name], s.device or "(unknown)"
        lines = devices.get(device)
        if lines is None:
            lines = devices[device] = [[] for _ in range(steps)]
        lines[i].append(s.value)
    return {
        name: [
            charts.Series(device, [p75(values) for values in lines])
            for device, lines in sorted(devices.items())
        ]
        for name, devices in buckets.items()
    }


@dataclass
class VitalsReport:
    totals: list[dict[str, Any]]  # each vital's p75 over every page
    rows: list[dict[str, Any]]
    charts: list[tuple[str, SafeString]]
    cut: str  # what ROW_LIMIT left out, when it did (the figures are of the newest)
    path: str  # the page path the charts are about ("" for every page)


def vitals_report(*, app: Application, window: TimeRange, path: str = "") -> VitalsReport:
    samples, cut = vital_samples(app=app, window=window)
    every: dict[str, list[float]] = defaultdict(list)
    for s in samples:
        every[s.name].append(s.value)
    totals = [_cell(name, every[name]) | {"title": VITALS[name][0]} for name in VITALS]
    charted = [s for s in samples if s.path == path] if path else samples
    labels = [x_label(window.since + window.step * i, window) for i in range(step_count(window))]
    where = f" on {path}" if path else ""
    drawn = [
        (
            f"{name} p75 by device class{where}",
            charts.line_chart(
                title=f"{VITALS[name][0]} ({name}) p75 by device class{where}",
                x_labels=labels,
                series=lines,
                unit=VITALS[name][1],
            ),
        )
        for name, lines in over_time(charted, window).items()
    ]
    note = cut_note(ROW_LIMIT, "reports") if cut else ""
    return VitalsReport(totals, by_page_and_device(samples), drawn, note, path)
