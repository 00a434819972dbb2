"""The figures behind ``GET /api/v1/metrics`` and the overview page, for one
application and time window, as plain functions (no HTTP).

``window_metrics`` answers with DESIGN.md §7's fields; ``window_series`` splits a
window into equal steps for charts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from correlator import analytics, rollups, selectors
from rumserver.models import Application


def window_metrics(
    *, app: Application, since: datetime, until: datetime, group_by: str | None = None
) -> dict[str, Any]:
    """Every §6 figure for the turns sent in [since, until), and per group when
    ``group_by`` is one of ``selectors.GROUP_COLUMNS``.

    Exact (nearest-rank percentiles, distinct counts) while the window holds at
    most ``LLMRUM_METRICS_EXACT_TURNS`` turns; beyond that from rollups, whose
    percentiles are within 1 % and distinct counts within about 2 %."""
    count = rollups.window_turn_count(app_id=app.pk, since=since, until=until)
    if count > settings.LLMRUM_METRICS_EXACT_TURNS:
        return rollups.window_figures(app_id=app.pk, since=since, until=until, group_by=group_by)
    turns = selectors.metrics_turns(app=app, since=since, until=until, group_by=group_by)
    openers = selectors.first_responses(app=app, turns=turns)
    scores = selectors.latest_hallucination(app=app, trace_ids={t.trace_id for t in turns})

    def figures(rows: list[analytics.TurnRow]) -> dict[str, Any]:
        return analytics.summarize(rows, first_responses=openers, hallucination=scores)

    body = figures(turns)
    body["groups"] = (
        [{"key": key, **figures(rows)} for key, rows in analytics.grouped(turns).items()]
        if group_by
        else []
    )
    return body


def window_series(
    *, app: Application, since: datetime, until: datetime, step: timedelta
) -> list[dict[str, Any]]:
    """``window_metrics`` (without groups) for each step of [since, until), oldest
    first; each point also has ``since`` and ``until`` (datetimes)."""
    points = []
    start = since
    while start < until:
        end = min(start + step, until)
        figures = window_metrics(app=app, since=start, until=end)
        figures.pop("groups")
        points.append({"since": start, "until": end, **figures})
        start = end
    return points
