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


class _Accumulator:
    """Per server, figure, series and step: gauge samples (count and total) and
    counter increases (amount and seconds), fed by points or by rollups in each
    series' time order."""

    def __init__(self, edges: list[int]) -> None:
        self.edges = edges
        # (service, instance) -> figure key -> step -> series -> [a, b]
        self.by_server: dict[tuple[str, str], dict[str, dict[int, dict[int, list[float]]]]] = (
            defaultdict(lambda: defaultdict(lambda: defaultdict(dict)))
        )
        self.series: int | None = None
        self.last: tuple[int, float] | None = None  # the series' previous sample

    def add(self, server: tuple[str, str], key: str, at: int, series: int,
            a: float, b: float) -> None:  # fmt: skip
        """Into one series' step: samples and their total (a gauge), or an increase
        and its seconds (a counter)."""
        totals = self.by_server[server][key][at].setdefault(series, [0.0, 0.0])
        totals[0] += a
        totals[1] += b

    def point(self, service: str, instance: str, name: str, series: int, time_ns: int,
              value: float) -> None:  # fmt: skip
        """One point; a series' points come in time order."""
        if series != self.series:
            self.series, self.last = series, None
        figure = _FIGURE_OF[name]
        at = bisect_right(self.edges, time_ns) - 1  # -1: before the range (a lookback)
        if figure.kind == "gauge":
            if at >= 0:
                self.add((service, instance), figure.key, at, series, 1, value)
            return
        if at >= 0 and self.last is not None:
            before_ns, before = self.last
            increase = value if value < before else value - before
            self.add((service, instance), figure.key, at, series, increase,
                     (time_ns - before_ns) / 1e9)  # fmt: skip
        self.last = (time_ns, value)

    def servers(self, steps: int) -> list[dict[str, Any]]:
        out = []
        for (service, instance), by_key in sorted(self.by_server.items()):
            server: dict[str, Any] = {"service": service, "instance": instance}
            for figure in FIGURES:
                by_step = by_key.get(figure.key, {})
                values: list[float | None] = []
                for i in range(steps):
                    per_series = [
                        a / b if figure.kind == "rate" else b / a
                        for a, b in by_step.get(i, {}).values()
                        if (b if figure.kind == "rate" else a) > 0
                    ]
                    values.append(figure.combine(per_series) if per_series else None)
                server[figure.key] = values
            out.append(server)
        return out


def model_server_series(
    *, app: Application, since: datetime, until: datetime, step: timedelta
) -> dict[str, Any]:
    """``{"steps": [{"since", "until", "client_ttft_p95_ms", "model_ttft_p95_ms"}],
    "servers": [{"service", "instance", <figure>: [value | None per step]}]}``.
    On PostgreSQL a range of whole minutes reads rollups; otherwise the points."""
    steps = figures.window_series(app=app, since=since, until=until, step=step)
    edges = [_ns(point["since"]) for point in steps] + [_ns(until)]
    accumulator = _Accumulator(edges)
    if metric_rollups.kept() and not (_ns(since) % MINUTE_NS or _ns(until) % MINUTE_NS):
        for service, instance, name, series, at, *sums in _rollup_steps(app.pk, edges, step):
            figure = _FIGURE_OF[name]
            a, b = sums[:2] if figure.kind == "gauge" else sums[2:]
            accumulator.add((service, instance), figure.key, at, series, a, b)
    else:
        for row in _point_rows(app, since, until):
            accumulator.point(*row)
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
        "servers": accumulator.servers(len(steps)),
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


# The rollups of one series in the segments: an index range each, behind a fence so
# that no plan reads every rollup (a hash join would, whatever the statistics say).
_PERIODS = f"""
    FROM unnest(%({{ids}})s::bigint[]) AS s(id)
    CROSS JOIN unnest(%(widths)s::smallint[], %(los)s::bigint[], %(his)s::bigint[])
        AS g(seconds, lo, hi)
    CROSS JOIN LATERAL (
        SELECT * FROM {MetricRollup._meta.db_table} r
        WHERE r.series_id = s.id AND r.seconds = g.seconds AND r.start_ns >= g.lo
          AND r.start_ns < g.hi
        OFFSET 0
    ) AS r
"""
_STEP = "width_bucket(r.start_ns, %(edges)s::bigint[]) - 1"
# Per series and step: gauge samples and total; counter increases and seconds, those
# inside each period and those from the period before (its last sample to this one's
# first), as the points would give them. Step -1 (the lookback) only lends a counter
# its last sample.
_ROLLUP_SQL = f"""
SELECT s.service, s.instance, s.name, steps.*
FROM (
    SELECT r.series_id, {_STEP} AS at, sum(r.samples), sum(r.total), 0.0, 0.0
    {_PERIODS.format(ids="gauges")}
    WHERE r.start_ns >= %(since)s
    GROUP BY 1, 2
    UNION ALL
    SELECT series_id, at, 0, 0.0,
           sum(increase) + coalesce(sum(CASE WHEN first_value < before THEN first_value
                                             ELSE first_value - before END), 0),
           sum(increase_seconds)
           + coalesce(sum((first_ns - before_ns)::float8 / 1e9::float8), 0)
    FROM (
        SELECT r.series_id, r.increase, r.increase_seconds, r.first_ns, r.first_value,
               {_STEP} AS at, lag(r.last_ns) OVER w AS before_ns,
               lag(r.last_value) OVER w AS before
        {_PERIODS.format(ids="counters")}
        WINDOW w AS (PARTITION BY r.series_id ORDER BY r.start_ns)
    ) AS periods
    WHERE at >= 0
    GROUP BY series_id, at
) AS steps
JOIN {MetricSeries._meta.db_table} s ON s.id = steps.series_id
"""


def _rollup_steps(app_id: int, edges: list[int], step: timedelta) -> list[tuple[Any, ...]]:
    """Per series and step (service, instance, name, series, step, samples, total,
    increase, seconds) from the rollups covering [since - LOOKBACK, until): hours where
    a whole hour lies in one step and its rollup is made, minutes elsewhere (the
    minutes made first)."""
    since, until = edges[0], edges[-1]
    metric_rollups.refresh(app_id, metric_rollups.MINUTE)
    lo = since - _ns_of(LOOKBACK)
    segments: list[tuple[int, int, int]] = []  # (seconds, from, to)
    if step >= timedelta(hours=1):  # steps of whole hours: each hour in one step
        first_hour = -(-since // HOUR_NS) * HOUR_NS
        last_hour = until // HOUR_NS * HOUR_NS
        marked = metric_rollups.marked(app_id, metric_rollups.HOUR)
        at = lo
        for hour in range(first_hour, last_hour, HOUR_NS):
            if hour not in marked:
                segments += [(60, at, hour), (3600, hour, hour + HOUR_NS)]
                at = hour + HOUR_NS
        segments.append((60, at, until))
    else:
        segments.append((60, lo, until))
    # Adjacent segments of one width as one range: one index range a series each.
    merged: list[tuple[int, int, int]] = []
    for width, start, end in segments:
        if start >= end:
            continue
        if merged and merged[-1][0] == width and merged[-1][2] == start:
            merged[-1] = (width, merged[-1][1], end)
        else:
            merged.append((width, start, end))
    segments = merged
    series = MetricSeries.objects.filter(app_id=app_id, name__in=list(_FIGURE_OF))
    ids: dict[str, list[int]] = {"gauge": [], "rate": []}
    for series_id, name in series.values_list("id", "name"):
        ids[_FIGURE_OF[name].kind].append(series_id)
    with connection.cursor() as cursor:
        cursor.execute(
            _ROLLUP_SQL,
            {
                "gauges": ids["gauge"],
                "counters": ids["rate"],
                "since": since,
                "edges": edges,
                "widths": [s[0] for s in segments],
                "los": [s[1] for s in segments],
                "his": [s[2] for s in segments],
            },
        )
        rows: list[tuple[Any, ...]] = cursor.fetchall()
    return rows


def _ns_of(length: timedelta) -> int:
    return int(length.total_seconds()) * 1_000_000_000
