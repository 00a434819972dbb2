"""Reading rollups: a time window's figures from the fewest whole days, hours and
minutes that cover it (``window_plan``), plus the raw turns of the partial minutes
at its edges and of any period still waiting for a rebuild (``stale_periods``).
``analytics.rollups`` builds the rows read here.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from django.db.models import Q, Sum

from correlator.analytics.exact import QUANTILES
from correlator.analytics.rollups import (
    CHILD,
    DAY,
    HOUR,
    LENGTH,
    MINUTE,
    PARENT,
    SERVER_ONLY,
    Accumulator,
    Dirty,
    accumulate,
    ceil,
    count_server_only,
    floor,
    joined,
    read_rows,
    server_only_facts,
    server_only_traces,
    turn_facts,
    untagged,
)
from correlator.analytics.sketches import LogHistogram
from correlator.models import DirtyRollup, Rollup, Turn
from rumserver.models import BrowserSession

BOT = BrowserSession.Device.BOT


def stale_periods(
    *, app_id: int, since: datetime, until: datetime, dirty: Dirty = DirtyRollup
) -> frozenset[tuple[str, datetime]]:
    """(period, start) of this application's rollup rows around [since, until) that
    must not be read: those waiting for a rebuild, and the hours and days holding
    them (an hour is rebuilt only after its minutes). ``dirty``: whose marks (the
    turns' rollups, or the vitals and errors pages')."""
    pending = dirty.objects.filter(
        app_id=app_id, start__gte=floor(since, DAY), start__lt=until
    ).values_list("period", "start")
    stale: set[tuple[str, datetime]] = set()
    for period, start in pending:
        stale.add((period, start))
        while period in PARENT:
            period = PARENT[period]
            stale.add((period, floor(start, period)))
    return frozenset(stale)


def window_plan(
    since: datetime,
    until: datetime,
    stale: frozenset[tuple[str, datetime]] = frozenset(),
) -> tuple[list[tuple[str, datetime, datetime]], list[tuple[datetime, datetime]]]:
    """Cover [since, until) with the fewest whole days, hours and minutes, plus the
    raw turns of the partial minutes at either edge. A ``stale`` period (see
    ``stale_periods``) is covered by its children instead, a stale minute by raw turns.
    Returns ([(period, from, to)], [(raw from, raw to)])."""
    ranges: list[tuple[str, datetime, datetime]] = []
    raw: list[tuple[datetime, datetime]] = []
    lo, hi = ceil(since, MINUTE), floor(until, MINUTE)
    if lo >= hi:
        return [], [(since, until)]
    if since < lo:
        raw.append((since, lo))
    if hi < until:
        raw.append((hi, until))

    def whole(period: str, lo: datetime, hi: datetime) -> None:
        for start in _starts(lo, hi, period):
            end = start + LENGTH[period]
            if (period, start) not in stale:
                ranges.append((period, start, end))
            elif period == MINUTE:
                raw.append((start, end))
            else:
                whole(CHILD[period], start, end)

    def cover(lo: datetime, hi: datetime, period: str) -> None:
        if period == MINUTE:
            whole(MINUTE, lo, hi)
            return
        inner_lo, inner_hi = ceil(lo, period), floor(hi, period)
        if inner_lo >= inner_hi:
            cover(lo, hi, CHILD[period])
            return
        whole(period, inner_lo, inner_hi)
        cover(lo, inner_lo, CHILD[period])
        cover(inner_hi, hi, CHILD[period])

    cover(lo, hi, DAY)
    return joined(sorted(ranges, key=lambda r: r[1])), untagged(
        joined(sorted(("", lo, hi) for lo, hi in raw))
    )


def _starts(lo: datetime, hi: datetime, period: str) -> Iterator[datetime]:
    start = lo
    while start < hi:
        yield start
        start += LENGTH[period]


def _rows_filter(
    app_id: int, ranges: list[tuple[str, datetime, datetime]], dimensions: Iterable[str]
) -> Q:
    covered = Q()
    for period, lo, hi in ranges:
        covered |= Q(period=period, start__gte=lo, start__lt=hi)
    return Q(app_id=app_id, dimension__in=list(dimensions)) & covered


def window_turn_count(*, app_id: int, since: datetime, until: datetime) -> int:
    """Turns in the window, from rollups and the raw edges (no sketches read)."""
    ranges, raw = window_plan(since, until, stale_periods(app_id=app_id, since=since, until=until))
    total = 0
    if ranges:
        total = (
            Rollup.objects.filter(_rows_filter(app_id, ranges, [""])).aggregate(n=Sum("turns"))["n"]
            or 0
        )
    for lo, hi in raw:
        total += Turn.objects.filter(
            app_id=app_id, t_send_ms__gte=lo.timestamp() * 1000, t_send_ms__lt=hi.timestamp() * 1000
        ).count()
    return total


def _window_accumulators(
    app_id: int, since: datetime, until: datetime, dimensions: list[str]
) -> dict[tuple[str, str], Accumulator]:
    ranges, raw = window_plan(since, until, stale_periods(app_id=app_id, since=since, until=until))
    accs: dict[tuple[str, str], Accumulator] = defaultdict(Accumulator)
    if ranges:
        rows = Rollup.objects.filter(_rows_filter(app_id, ranges, dimensions))
        for (dimension, key), counts, packed in read_rows(rows, "dimension", "key"):
            accs[(dimension, key)].merge_packed(counts=counts, packed=packed)
    accumulate(turn_facts(app_id=app_id, ranges=raw), dimensions, into=accs)
    for _, cause in server_only_traces(app_id, raw):
        acc = accs[("", "")]
        acc.counts["server_only_traces"] += 1
        acc.unlinked[cause] = acc.unlinked.get(cause, 0) + 1
    return accs


def _dimensions(group_bys: Iterable[str], bots: bool) -> list[str]:
    """The dimensions to read: the whole application and each split asked for; when
    bots are left out, the device classes instead of the whole application, whose
    totals they give (``_without_bots``): its rows would be read for nothing."""
    if bots:
        return ["", *group_bys]
    return [*group_bys] if "device" in group_bys else [*group_bys, "device"]


def _without_bots(accs: dict[tuple[str, str], Accumulator]) -> Accumulator:
    """The whole application's accumulator without bot turns: every device class's but
    the bot's, merged. Device classes split every turn (unknown is ""), so they add up
    to the application's turns; the distinct-count sketches merge as a union, so a
    session counts once as in the whole-application row."""
    out = Accumulator()
    for (dimension, key), acc in accs.items():
        if dimension != "device" or key == BOT:
            continue
        for name, n in acc.counts.items():
            out.counts[name] += n
        for name, histogram in acc.histograms.items():
            out.histograms[name].merge(histogram)
        out.sessions.merge(acc.sessions)
        out.conversations.merge(acc.conversations)
    return out


def _body(accs: dict[tuple[str, str], Accumulator], group_by: str | None) -> dict[str, Any]:
    body = (accs.get(("", "")) or Accumulator()).figures()
    body["groups"] = (
        [
            {"key": key, **acc.figures()}
            for (dimension, key), acc in sorted(accs.items())
            if dimension == group_by
        ]
        if group_by
        else []
    )
    return body


def window_figures(
    *,
    app_id: int,
    since: datetime,
    until: datetime,
    group_by: str | None = None,
    bots: bool = True,
) -> dict[str, Any]:
    """``figures.window_metrics``'s answer from rollups (and the raw turns of the
    partial minutes at the edges); with ``bots`` False the totals leave bot turns out
    (the groups keep them)."""
    accs = _window_accumulators(
        app_id, since, until, _dimensions([group_by] if group_by else [], bots)
    )
    if not bots:
        accs[("", "")] = _without_bots(accs)
    return _body(accs, group_by)


def window_propagation(*, app_id: int, since: datetime, until: datetime) -> dict[str, Any]:
    """Propagation health: turns, those linked to server spans, server-only traces,
    and the unlinked of both sides by likely cause (``rules.propagation_cause``)."""
    acc = _window_accumulators(app_id, since, until, [""]).get(("", "")) or Accumulator()
    return {
        "turns": acc.counts["turns"],
        "linked_turns": acc.counts["linked_turns"],
        "server_only_traces": acc.counts["server_only_traces"],
        "unlinked_by_cause": dict(sorted(acc.unlinked.items(), key=lambda kv: (-kv[1], kv[0]))),
    }


def window_server_only(*, app_id: int, since: datetime, until: datetime) -> dict[str, Any]:
    """Traffic with server spans and no browser root (API clients): ``{"traces",
    "server_ttft_ms": {p50, …}, "groups": [{"key": model, "traces", "server_ttft_ms"}]}``.
    The count is the application rows' column (kept since rollups began; summed, no
    sketch read); the TTFT and the split by model come from the ``SERVER_ONLY`` rows
    (rebuilt periods only); the raw edges from the traces and their spans."""
    ranges, raw = window_plan(since, until, stale_periods(app_id=app_id, since=since, until=until))
    by_model: dict[str, Accumulator] = defaultdict(Accumulator)
    edges = Accumulator()
    traces = 0
    if ranges:
        rows = Rollup.objects.filter(_rows_filter(app_id, ranges, [SERVER_ONLY]))
        for (key,), counts, packed in read_rows(rows, "key"):
            by_model[key].merge_packed(counts=counts, packed=packed)
        whole = Rollup.objects.filter(_rows_filter(app_id, ranges, [""]))
        traces = whole.aggregate(n=Sum("server_only_traces"))["n"] or 0
    for trace in server_only_facts(app_id, raw):
        count_server_only(trace, whole=edges, by_model=by_model[trace.model])
    ttft = LogHistogram()
    groups = []
    for key, acc in sorted(by_model.items()):
        ttft.merge(acc.histograms["server_ttft_ms"])
        groups.append(
            {
                "key": key,
                "traces": acc.counts["server_only_traces"],
                "server_ttft_ms": _quantiles(acc.histograms["server_ttft_ms"]),
            }
        )
    return {
        "traces": traces + edges.counts["server_only_traces"],
        "server_ttft_ms": _quantiles(ttft),
        "groups": groups,
    }


def _quantiles(histogram: LogHistogram) -> dict[str, float | None]:
    return {label: histogram.quantile(q) for label, q in QUANTILES.items()}


def window_breakdown(
    *, app_id: int, since: datetime, until: datetime, group_bys: list[str], bots: bool = True
) -> dict[str, dict[str, Any]]:
    """``window_figures`` for several ``group_by`` from one read."""
    accs = _window_accumulators(app_id, since, until, _dimensions(group_bys, bots))
    if not bots:
        accs[("", "")] = _without_bots(accs)
    return {group_by: _body(accs, group_by) for group_by in group_bys}


def series_figures(
    *, app_id: int, points: list[tuple[datetime, datetime]], bots: bool = True
) -> list[dict[str, Any]]:
    """Figures (no groups) for consecutive [from, to) points. The points that are
    whole periods of one size (a chart's steps) are read in one query; the partial
    ones at the ends like any window. Without ``bots``, from the device-class rows
    but the bot's (``_without_bots``)."""
    period = next(
        (
            p
            for p in (DAY, HOUR, MINUTE)
            if all(floor(lo, p) == lo and floor(hi, p) == hi for lo, hi in points[1:-1])
        ),
        MINUTE,
    )
    stale = stale_periods(app_id=app_id, since=points[0][0], until=points[-1][1]) if points else ()
    whole = [
        i
        for i, (lo, hi) in enumerate(points)
        if floor(lo, period) == lo
        and floor(hi, period) == hi
        and not any(p == period and lo <= start < hi for p, start in stale)
    ]
    accs = {i: Accumulator() for i in whole}
    if whole:
        starts = [points[i][0] for i in whole]
        rows = Rollup.objects.filter(
            Q(dimension="") if bots else Q(dimension="device") & ~Q(key=BOT),
            app_id=app_id,
            period=period,
            start__gte=starts[0],
            start__lt=points[whole[-1]][1],
        )
        for (start,), counts, packed in read_rows(rows, "start"):
            at = bisect_right(starts, start) - 1
            if at >= 0 and start < points[whole[at]][1]:
                accs[whole[at]].merge_packed(counts=counts, packed=packed)
    out = []
    for i, (lo, hi) in enumerate(points):
        if i in accs:
            out.append(accs[i].figures())
        else:
            figures = window_figures(app_id=app_id, since=lo, until=hi, bots=bots)
            figures.pop("groups")
            out.append(figures)
    return out
