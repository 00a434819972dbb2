"""The figures behind ``GET /api/v1/metrics`` and the overview page, for one
application and time window, as plain functions (no HTTP).

``window_metrics`` answers with DESIGN.md §7's fields; ``window_series`` splits a
window into equal steps for charts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from correlator import analytics, selectors
from rumserver.models import Application


def window_metrics(
    *, app: Application, since: datetime, until: datetime, group_by: str | None = None
) -> dict[str, Any]:
    """Every §6 figure for the turns sent in [since, until), and per group when
    ``group_by`` is one of ``selectors.GROUP_COLUMNS``."""
    turns = selectors.metrics_turns(app=app, since=since, until=until, group_by=group_by)
    voted_down, edited = selectors.turn_feedback(app=app, span_ids={t.span_id for t in turns})
    scores = selectors.latest_hallucination(app=app, trace_ids={t.trace_id for t in turns})

    def figures(rows: list[analytics.TurnRow]) -> dict[str, Any]:
        return analytics.summarize(rows, voted_down=voted_down, edited=edited, hallucination=scores)

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
