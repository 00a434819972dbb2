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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from correlator.analytics import figures
from rumserver.models import Application, MetricPoint


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


def _ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def model_server_series(
    *, app: Application, since: datetime, until: datetime, step: timedelta
) -> dict[str, Any]:
    """``{"steps": [{"since", "until", "client_ttft_p95_ms", "model_ttft_p95_ms"}],
    "servers": [{"service", "instance", <figure>: [value | None per step]}]}``."""
    steps = figures.window_series(app=app, since=since, until=until, step=step)
    edges = [_ns(point["since"]) for point in steps] + [_ns(until)]
    rows = (
        MetricPoint.objects.filter(
            app=app,
            name__in=list(_FIGURE_OF),
            time_ns__gte=_ns(since - LOOKBACK),
            time_ns__lt=_ns(until),
            value__isnull=False,
        )
        .order_by("series", "time_ns")
        .values_list("service", "instance", "name", "series", "time_ns", "value")
        .iterator(chunk_size=10_000)
    )
    # (service, instance) -> figure key -> step -> one value per series
    per_series: dict[tuple[str, str], dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    gauge_samples: dict[tuple[str, int], list[float]] = defaultdict(list)
    increases: dict[tuple[str, int], list[float]] = defaultdict(lambda: [0.0, 0.0])
    current: tuple[str, str, str, str] | None = None
    previous: tuple[int, float] | None = None

    def flush() -> None:
        if current is None:
            return
        server, key = (current[0], current[1]), _FIGURE_OF[current[2]].key
        for (_, at), samples in gauge_samples.items():
            per_series[server][key][at].append(_mean(samples))
        for (_, at), (delta, seconds) in increases.items():
            if seconds > 0:
                per_series[server][key][at].append(delta / seconds)
        gauge_samples.clear()
        increases.clear()

    first_ns = edges[0]
    for service, instance, name, series, time_ns, value in rows:
        if current is None or current[3] != series:
            flush()
            current, previous = (service, instance, name, series), None
        if value is None:
            continue  # excluded by the query; for the type checker
        at = bisect_right(edges, time_ns) - 1  # -1: before the range
        if _FIGURE_OF[name].kind == "gauge":
            if time_ns >= first_ns:
                gauge_samples[series, at].append(value)
            continue
        if previous is not None and time_ns >= first_ns:
            before_ns, before = previous
            increase = value if value < before else value - before
            totals = increases[series, at]
            totals[0] += increase
            totals[1] += (time_ns - before_ns) / 1e9
        previous = (time_ns, value)
    flush()

    servers = []
    for (service, instance), by_key in sorted(per_series.items()):
        server: dict[str, Any] = {"service": service, "instance": instance}
        for figure in FIGURES:
            by_step = by_key.get(figure.key, {})
            server[figure.key] = [
                figure.combine(by_step[i]) if by_step.get(i) else None for i in range(len(steps))
            ]
        servers.append(server)
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
        "servers": servers,
    }
