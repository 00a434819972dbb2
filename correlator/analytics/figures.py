"""The figures behind ``GET /api/v1/metrics`` and the overview page, for one
application and time window, as plain functions (no HTTP): exact from the turns
(``analytics.exact``) while the window holds few, else from rollups
(``analytics.windows``).

``window_metrics`` answers with DESIGN.md §7's fields; ``window_series`` splits a
window into equal steps for charts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from correlator.analytics import windows
from correlator.analytics.exact import TurnRow, exact_window
from correlator.analytics.sketches import RELATIVE_ACCURACY
from correlator.epoch import EPOCH
from rumserver.models import Application, BrowserSession

BOT = BrowserSession.Device.BOT


def window_metrics(
    *, app: Application, since: datetime, until: datetime, group_by: str | None = None
) -> dict[str, Any]:
    """Every §6 figure for the turns sent in [since, until), and per group when
    ``group_by`` is one of ``exact.GROUP_COLUMNS``.

    Exact (nearest-rank percentiles, distinct counts) while the window holds at
    most ``LLMRUM_METRICS_EXACT_TURNS`` turns; beyond that from rollups, whose
    percentiles are within 1 % and distinct counts within about 2 %."""
    if group_by:
        return window_breakdown(app=app, since=since, until=until, group_bys=[group_by])[group_by]
    if _rolled_up(app, since, until):
        return {
            **windows.window_figures(app_id=app.pk, since=since, until=until),
            **percentile_method(sketch=True),
        }
    turns, figures = exact_window(app, since, until)
    return {**figures(turns), "groups": [], **percentile_method(sketch=False)}


def percentile_method(*, sketch: bool) -> dict[str, Any]:
    """How an answer's percentiles were computed: nearest-rank over every turn, or
    from the rollups' mergeable histograms, within their relative error."""
    if sketch:
        return {"percentiles": "sketch", "percentiles_relative_error": RELATIVE_ACCURACY}
    return {"percentiles": "exact", "percentiles_relative_error": 0.0}


def window_breakdown(
    *,
    app: Application,
    since: datetime,
    until: datetime,
    group_bys: list[str],
    bots: bool = True,
) -> dict[str, dict[str, Any]]:
    """``window_metrics`` for each of ``group_bys`` at once: one read of the turns
    (or of the rollups) for all of them. With ``bots`` False the window's totals
    leave out the turns of sessions whose device class is ``bot``; the groups keep
    them (rollups split by one key at a time, so a model's row cannot drop them)."""
    if _rolled_up(app, since, until):
        answers = windows.window_breakdown(
            app_id=app.pk, since=since, until=until, group_bys=group_bys, bots=bots
        )
        return {
            key: {**answer, **percentile_method(sketch=True)} for key, answer in answers.items()
        }
    read = group_bys if bots or "device" in group_bys else [*group_bys, "device"]
    turns, figures = exact_window(app, since, until, read)
    counted = turns if bots else _without_bots(turns, read.index("device"))
    whole = {**figures(counted), **percentile_method(sketch=False)}
    out = {}
    for index, group_by in enumerate(group_bys):
        groups: dict[str, list[TurnRow]] = {}
        for turn in turns:
            groups.setdefault(turn.groups[index], []).append(turn)
        out[group_by] = {
            **whole,
            "groups": [{"key": key, **figures(rows)} for key, rows in sorted(groups.items())],
        }
    return out


def _without_bots(turns: list[TurnRow], device_index: int) -> list[TurnRow]:
    return [t for t in turns if t.groups[device_index] != BOT]


def _rolled_up(app: Application, since: datetime, until: datetime) -> bool:
    """Whether the window holds too many turns to answer exactly."""
    count = windows.window_turn_count(app_id=app.pk, since=since, until=until)
    return count > settings.LLMRUM_METRICS_EXACT_TURNS


def propagation_health(*, app: Application, since: datetime, until: datetime) -> dict[str, Any]:
    """Turns linked to server spans, server-only traces, and the unlinked of both
    sides by likely cause, from rollups (plus the raw rows of the edge minutes):
    ``{"turns", "linked_turns", "server_only_traces", "unlinked_by_cause": {cause: n}}``."""
    return windows.window_propagation(app_id=app.pk, since=since, until=until)


def server_only(*, app: Application, since: datetime, until: datetime) -> dict[str, Any]:
    """Traces with server spans and no browser root (API clients): how many, the
    entry's server TTFT, and both by model, from rollups (plus the raw rows of the
    edge minutes) like ``propagation_health``; percentiles within 1 %."""
    return windows.window_server_only(app_id=app.pk, since=since, until=until)


def step_bounds(
    since: datetime, until: datetime, step: timedelta
) -> list[tuple[datetime, datetime]]:
    """[since, until) cut at the multiples of ``step`` since the epoch (UTC): whole
    steps line up with whole rollup periods; the first and last may be partial."""
    bound = EPOCH + ((since - EPOCH) // step + 1) * step
    points, start = [], since
    while start < until:
        end = min(bound, until)
        points.append((start, end))
        start, bound = end, bound + step
    return points


def window_series(
    *, app: Application, since: datetime, until: datetime, step: timedelta, bots: bool = True
) -> list[dict[str, Any]]:
    """``window_metrics`` (without groups) for each step of [since, until), oldest
    first; each point also has ``since`` and ``until`` (datetimes). Steps are cut at
    multiples of ``step`` (``step_bounds``); one read serves every point. With
    ``bots`` False, bot turns are left out as in ``window_breakdown``'s totals."""
    points = step_bounds(since, until, step)
    if _rolled_up(app, since, until):
        figures = windows.series_figures(app_id=app.pk, points=points, bots=bots)
    else:
        turns, summarize = exact_window(app, since, until, None if bots else ["device"])
        if not bots:
            turns = _without_bots(turns, 0)
        figures = []
        for lo, hi in points:
            lo_ms, hi_ms = lo.timestamp() * 1000, hi.timestamp() * 1000
            figures.append(summarize([t for t in turns if lo_ms <= t.t_send_ms < hi_ms]))
    return [{"since": lo, "until": hi, **f} for (lo, hi), f in zip(points, figures, strict=True)]
