"""The model servers' state over time (vLLM and DCGM metrics from ``/v1/metrics`` or the
built-in scraper) on the same steps as the client and model TTFT p95 of
``figures.window_series``, for ``GET /api/v1/model-servers`` and its page.

Per server (``service.name`` + ``service.instance.id``) and step:
- gauges (requests running and waiting, KV-cache use, GPU use): each series' samples
  in the step averaged, then the series summed (requests, over engines) or averaged
  (KV-cache use and GPU use, over engines and GPUs);
- counters (preemptions, prompt and generation tokens): a rate per second, the
  increases between consecutive samples whose later one falls in the step over the
  time between them, summed over series. A sample lower than the one before is a
  counter reset (the server restarted from zero): its own value is the increase.
A step with no sample is ``null``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import connection

from correlator.analytics import figures
from rumserver import metric_rollups
from rumserver.models import Application, MetricPoint, MetricRollup, MetricSeries


def _named(*names: str) -> tuple[str, ...]:
    """vLLM's names and their escaped forms (``vllm_…``): an OpenMetrics scrape
    without ``escaping=allow-utf-8`` renames the samples (STANDARDS.md §10.3)."""
    return names + tuple(n.replace(":", "_") for n in names if ":" in n)


def _counter(name: str) -> tuple[str, ...]:
    # The Collector may keep or drop the _total suffix of a counter.
    return _named(name, name.removesuffix("_total"))


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


@dataclass(frozen=True)
class Figure:
    key: str
    names: tuple[str, ...]
    kind: str  # "gauge" or "rate"
    combine: Callable[[list[float]], float]


FIGURES = (
    Figure("requests_running", _named("vllm:num_requests_running"), "gauge", sum),
    Figure("requests_waiting", _named("vllm:num_requests_waiting"), "gauge", sum),
    Figure(
        "kv_cache_usage",
        _named("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
        "gauge",
        _mean,
    ),
    Figure("preemptions_per_second", _counter("vllm:num_preemptions_total"), "rate", sum),
    Figure("prompt_tokens_per_second", _counter("vllm:prompt_tokens_total"), "rate", sum),
    Figure("generation_tokens_per_second", _counter("vllm:generation_tokens_total"), "rate", sum),
    Figure("gpu_utilization_percent", ("DCGM_FI_DEV_GPU_UTIL",), "gauge", _mean),
)
_FIGURE_OF = {name: figure for figure in FIGURES for name in figure.names}
# How far before the range a counter's previous sample is looked for, so the first
# step has a rate: a few scrape intervals.
LOOKBACK = timedelta(minutes=5)
MINUTE_NS, HOUR_NS = 60 * 1_000_000_000, 3600 * 1_000_000_000


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


# Per series: its server, figure and value per step (None: no sample in the step).
SeriesValues = dict[int, tuple[tuple[str, str], "Figure", list[float | None]]]


class _Accumulator:
    """Per series and step, from its points in time order: gauge samples (count and
    total) and counter increases (amount and seconds)."""

    def __init__(self, edges: list[int]) -> None:
        self.edges = edges
        self.sums: dict[int, dict[int, list[float]]] = defaultdict(dict)
        self.meta: dict[int, tuple[tuple[str, str], Figure]] = {}
        self.series: int | None = None
        self.last: tuple[int, float] | None = None  # the series' previous sample

    def point(self, service: str, instance: str, name: str, series: int, time_ns: int,
              value: float) -> None:  # fmt: skip
        """One point; a series' points come in time order."""
        if series != self.series:
            self.series, self.last = series, None
        figure = _FIGURE_OF[name]
        at = bisect_right(self.edges, time_ns) - 1  # -1: before the range (a lookback)
        if at >= 0 and series not in self.meta:  # a server is shown when it sent in range
            self.meta[series] = ((service, instance), figure)
        if figure.kind == "gauge":
            if at >= 0:
                self._add(series, at, 1, value)
            return
        if at >= 0 and self.last is not None:
            before_ns, before = self.last
            increase = value if value < before else value - before
            self._add(series, at, increase, (time_ns - before_ns) / 1e9)
        self.last = (time_ns, value)

    def _add(self, series: int, at: int, a: float, b: float) -> None:
        totals = self.sums[series].setdefault(at, [0.0, 0.0])
        totals[0] += a
        totals[1] += b

    def values(self, steps: int) -> SeriesValues:
        """Per series and step: the samples' mean (a gauge) or the increase per second
        (a counter)."""
        out: SeriesValues = {}
        for series, (server, figure) in self.meta.items():
            values: list[float | None] = [None] * steps
            for at, (a, b) in self.sums[series].items():
                if figure.kind == "rate" and b > 0:
                    values[at] = a / b
                elif figure.kind == "gauge" and a > 0:
                    values[at] = b / a
            out[series] = (server, figure, values)
        return out


def _servers(per_series: SeriesValues, steps: int) -> list[dict[str, Any]]:
    """Each server's figures per step: its series' values combined (summed over
    engines, averaged over GPUs)."""
    by_server: dict[tuple[str, str], dict[str, list[list[float | None]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for server, figure, values in per_series.values():
        by_server[server][figure.key].append(values)
    out = []
    for (service, instance), by_key in sorted(by_server.items()):
        answer: dict[str, Any] = {"service": service, "instance": instance}
        for figure in FIGURES:
            series = by_key.get(figure.key, [])
            if len(series) == 1:  # one series (one engine, one GPU): its values
                answer[figure.key] = series[0]
                continue
            combined: list[float | None] = [None] * steps
            for i in range(steps if series else 0):
                present = [v[i] for v in series if v[i] is not None]
                if present:
                    combined[i] = figure.combine(present)  # type: ignore[arg-type]
            answer[figure.key] = combined
        out.append(answer)
    return out


def model_server_series(
    *, app: Application, since: datetime, until: datetime, step: timedelta
) -> dict[str, Any]:
    """``{"steps": [{"since", "until", "client_ttft_p95_ms", "model_ttft_p95_ms"}],
    "servers": [{"service", "instance", <figure>: [value | None per step]}]}``.
    On PostgreSQL a range of whole minutes reads rollups; otherwise the points."""
    steps = figures.window_series(app=app, since=since, until=until, step=step)
    edges = [_ns(point["since"]) for point in steps] + [_ns(until)]
    if metric_rollups.kept() and not (_ns(since) % MINUTE_NS or _ns(until) % MINUTE_NS):
        per_series = _rollup_values(app.pk, edges)
    else:
        accumulator = _Accumulator(edges)
        for row in _point_rows(app, since, until):
            accumulator.point(*row)
        per_series = accumulator.values(len(steps))
    return {
        "steps": [
            {
                "since": point["since"],
                "until": point["until"],
                "client_ttft_p95_ms": point["client_ttft_ms"]["p95"],
                "model_ttft_p95_ms": point["model_ttft_ms"]["p95"],
            }
            for point in steps
        ],
        "servers": _servers(per_series, len(steps)),
    }


def _point_rows(app: Application, since: datetime, until: datetime) -> Iterator[tuple[Any, ...]]:
    return (
        MetricPoint.objects.filter(
            # Ids, not a join: the points' key leads with the time.
            series_id__in=list(
                MetricSeries.objects.filter(app=app, name__in=list(_FIGURE_OF)).values_list(
                    "id", flat=True
                )
            ),
            time_ns__gte=_ns(since - LOOKBACK),
            time_ns__lt=_ns(until),
            value__isnull=False,
        )
        .order_by("series_id", "time_ns")
        .values_list(
            "series__service", "series__instance", "series__name", "series_id", "time_ns", "value"
        )
        .iterator(chunk_size=10_000)
    )


# Per segment (a level and a range of periods), one range of the application's index
# (metric_rollup_app_level: the sums are in the index, no table row is read), behind
# a fence so that the plan probes it a segment. Summed per series and step: gauge
# samples and total; counter increases and seconds, inside each row and from the point
# before it when that point is in the range read (as the points would give them: the
# first row's prior only from within LOOKBACK). Then the step's value (mean or rate),
# the steps of a series in one row.
_ROLLUP_SQL = f"""
SELECT s.id, s.service, s.instance, s.name, steps.ats,
       CASE WHEN s.name = ANY(%(counters)s) THEN steps.rates ELSE steps.means END
FROM (
    SELECT series_id, array_agg(at) AS ats,
           array_agg(increase / nullif(seconds, 0)) AS rates,
           array_agg(total / nullif(samples, 0)) AS means
    FROM (
        SELECT r.series_id, width_bucket(r.start_ns, %(edges)s::bigint[]) - 1 AS at,
               sum(r.samples) AS samples, sum(r.total) AS total,
               sum(r.increase) + coalesce(sum(r.prior_increase)
                                          FILTER (WHERE r.prior_ns >= %(lo)s), 0) AS increase,
               sum(r.increase_seconds)
               + coalesce(sum((r.first_ns - r.prior_ns)::float8 / 1e9::float8)
                          FILTER (WHERE r.prior_ns >= %(lo)s), 0) AS seconds
        FROM unnest(%(widths)s::integer[], %(los)s::bigint[], %(his)s::bigint[])
            AS g(seconds, lo, hi)
        CROSS JOIN LATERAL (
            SELECT r.series_id, r.start_ns, r.samples, r.total, r.increase,
                   r.increase_seconds, r.first_ns, r.prior_ns, r.prior_increase
            FROM {MetricRollup._meta.db_table} r
            WHERE r.app_id = %(app)s AND r.seconds = g.seconds AND r.start_ns >= g.lo
              AND r.start_ns < g.hi AND r.series_id = ANY(ARRAY(
                  SELECT id FROM {MetricSeries._meta.db_table}
                  WHERE app_id = %(app)s AND name = ANY(%(names)s)))
            OFFSET 0
        ) AS r
        GROUP BY 1, 2
    ) AS by_step
    GROUP BY 1
) AS steps
JOIN {MetricSeries._meta.db_table} s ON s.id = steps.series_id
"""


def _rollup_values(app_id: int, edges: list[int]) -> SeriesValues:
    """Per series of a figure, its values per step from the rollups covering
    [since, until), the minutes made first."""
    metric_rollups.refresh(app_id, metric_rollups.MINUTE)
    segments = _segments(edges, metric_rollups.marked(app_id, metric_rollups.HOUR))
    with connection.cursor() as cursor:
        cursor.execute(
            _ROLLUP_SQL,
            {
                "app": app_id,
                "names": list(_FIGURE_OF),
                "counters": [name for name, f in _FIGURE_OF.items() if f.kind == "rate"],
                "edges": edges,
                "lo": edges[0] - _ns_of(LOOKBACK),
                "widths": [s[0] for s in segments],
                "los": [s[1] for s in segments],
                "his": [s[2] for s in segments],
            },
        )
        rows = cursor.fetchall()
    out: SeriesValues = {}
    for series_id, service, instance, name, steps, step_values in rows:
        values: list[float | None] = [None] * (len(edges) - 1)
        for at, value in zip(steps, step_values, strict=True):
            values[at] = value
        out[series_id] = ((service, instance), _FIGURE_OF[name], values)
    return out


def _segments(edges: list[int], marked_hours: set[int]) -> list[tuple[int, int, int]]:
    """(seconds, from, to): each step covered by the largest whole rollup periods
    that fit in it, runs of one level merged (one index range a series each). An
    hour still marked (the current one, until beat makes it) and every period
    around it are read from their minutes, which the read has just made."""
    segments: list[tuple[int, int, int]] = []
    for start, end in zip(edges, edges[1:], strict=False):
        at = start
        while at < end:
            seconds, width = _period_at(at, end, marked_hours)
            if segments and segments[-1][0] == seconds and segments[-1][2] == at:
                segments[-1] = (seconds, segments[-1][1], at + width)
            else:
                segments.append((seconds, at, at + width))
            at += width
    return segments


def _period_at(at: int, end: int, marked_hours: set[int]) -> tuple[int, int]:
    for seconds in metric_rollups.LEVELS:
        width = seconds * 1_000_000_000
        if at % width or at + width > end:
            continue
        if seconds < metric_rollups.HOUR or not any(
            hour in marked_hours for hour in range(at, at + width, HOUR_NS)
        ):
            return seconds, width
    return metric_rollups.MINUTE, MINUTE_NS  # a range of whole minutes: never reached


def _ns_of(length: timedelta) -> int:
    return int(length.total_seconds()) * 1_000_000_000
