"""The Web Vitals page: LCP, INP, CLS, FCP and TTFB at p75 by page path and device
class, and over time by device class for one page or all.

It reads the vital reports' rollups (``analytics.event_rollups``) of the range's
steps, and the raw reports of their partial edge minutes: the range's every report
counts whatever their number, and a percentile comes from a histogram, within 1 % of
the exact nearest rank. A web-vitals metric reported again replaces its row (the SDK
uses the metric's id as the event id), so each report is one page load's latest
value. Bot sessions are left out unless asked for."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from django.utils.safestring import SafeString

from correlator.analytics.event_rollups import (
    EVERY_PAGE,
    VITAL,
    EventAccumulator,
    page_path,
    window_events,
)
from correlator.analytics.figures import step_bounds
from correlator.analytics.sketches import RELATIVE_ACCURACY, LogHistogram
from correlator.reports import charts
from correlator.reports.format import DASH, fmt_number
from correlator.reports.forms import TimeRange
from correlator.reports.pages.overview import _x_label as x_label
from rumserver.models import Application

__all__ = ["page_path"]  # the path a report is counted under: the tests name it here

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
PERCENTILES_NOTE = (
    f"percentiles are from rollup histograms, within {RELATIVE_ACCURACY:.0%} of the exact value"
)
UNKNOWN = "(unknown)"


@dataclass
class Measured:
    """One vital's reports somewhere: how many, and their values' histogram."""

    count: int = 0
    values: LogHistogram = field(default_factory=LogHistogram)

    def add(self, acc: EventAccumulator) -> None:
        self.count += acc.count
        self.values.merge(acc.values)

    @property
    def p75(self) -> float | None:
        return self.values.quantile(P75)


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


def _cell(name: str, measured: Measured | None) -> dict[str, Any]:
    measured = measured or Measured()
    value = measured.p75
    return {
        "name": name,
        "value": fmt_vital(name, value),
        "rating": rating(name, value),
        "count": measured.count,
    }


# (point index, vital, page path, device class) -> its reports (``window_events``)
Reports = dict[tuple[int, str, str, str], EventAccumulator]


def by_page_and_device(reports: Reports) -> list[dict[str, Any]]:
    """One row per (page path, device class): each vital's p75 and report count, the
    most measured rows first."""
    grouped: dict[tuple[str, str], dict[str, Measured]] = defaultdict(lambda: defaultdict(Measured))
    for (_, name, path, device), acc in reports.items():
        grouped[(path, device)][name].add(acc)
    rows: list[dict[str, Any]] = [
        {
            "path": path,
            "device": device or UNKNOWN,
            "samples": sum(m.count for m in measured.values()),
            "cells": [_cell(name, measured.get(name)) for name in VITALS],
        }
        for (path, device), measured in grouped.items()
    ]
    rows.sort(key=lambda r: (-r["samples"], r["path"], r["device"]))
    return rows[:TABLE_LIMIT]


def over_time(reports: Reports, steps: int) -> dict[str, list[charts.Series]]:
    """Per vital, a p75 line per device class over the ``steps`` points (None where a
    point has no report)."""
    lines: dict[str, dict[str, list[Measured]]] = {name: {} for name in VITALS}
    for (at, name, _, device), acc in reports.items():
        if name not in lines:
            continue
        devices = lines[name]
        points = devices.get(device or UNKNOWN)
        if points is None:
            points = devices[device or UNKNOWN] = [Measured() for _ in range(steps)]
        points[at].add(acc)
    return {
        name: [
            charts.Series(device, [m.p75 for m in points])
            for device, points in sorted(devices.items())
        ]
        for name, devices in lines.items()
    }


@dataclass
class VitalsReport:
    totals: list[dict[str, Any]]  # each vital's p75 over every page
    rows: list[dict[str, Any]]
    charts: list[tuple[str, SafeString]]
    path: str  # the page path the charts are about ("" for every page)
    bots: bool = False  # whether bot sessions' reports count


def vitals_report(
    *, app: Application, window: TimeRange, path: str = "", bots: bool = False
) -> VitalsReport:
    """The page's figures over the range's steps, cut at multiples of the step as the
    overview's charts are (``figures.step_bounds``: whole steps are whole rollup
    periods; the first and last may be partial)."""
    points = step_bounds(window.since, window.until, window.step)
    reports = window_events(
        app_id=app.pk, kind=VITAL, points=[(window.since, window.until)], bots=bots
    )
    # The charts from the rows of that page, or of every page together: not each
    # page's rows of every step.
    charted = window_events(
        app_id=app.pk, kind=VITAL, points=points, bots=bots, place=path or EVERY_PAGE
    )
    every: dict[str, Measured] = defaultdict(Measured)
    for (_, name, _, _), acc in reports.items():
        every[name].add(acc)
    totals = [_cell(name, every.get(name)) | {"title": VITALS[name][0]} for name in VITALS]
    labels = [x_label(lo, window) for lo, _ in points]
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
        for name, lines in over_time(charted, len(points)).items()
    ]
    return VitalsReport(totals, by_page_and_device(reports), drawn, path, bots)
