"""The RUM figures on ``GET /metrics`` (DESIGN.md §10.6): client and server TTFT and
time between tokens as Prometheus histograms, and turns by outcome as counters,
labelled by application slug and model.

They are read at scrape time from the day rollups of all time (one row per day,
application and model), so every web process on every host answers the same
figures, wherever the workers stitched. Two consequences, both documented in HELP
and the README:

- Lag: a turn counts once its minute has been rolled up into its hour and day by
  the sweep (``llmrum_rollup_lag_seconds`` says how far behind that is).
- Monotonic, with one exception: retention deletes minute rollups only (hours and
  days stay, ``correlator.retention``), so an expiring period never lowers a sum.
  A rebuild recounts a day from its turns, so the sums go down only when a turn
  is re-stitched into another outcome or model (a late span); Prometheus takes
  that as a counter reset, which ``rate()`` and ``increase()`` handle. Keeping a
  high-water mark instead would need a shared store of every series's peak and
  would then report turns that no longer exist.

Histogram buckets: the rollups keep logarithmic sketch buckets (``sketches``,
each within 1 % of its values); a sketch bucket counts toward the first ``le``
bound at or above its upper edge, so a value up to 1 % below a bound may count in
the next one. ``_sum`` adds each bucket's midpoint: within 1 % as well.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from correlator.analytics.sketches import GAMMA, ZERO_BUCKET, bucket_value
from correlator.models import Rollup
from rumserver.models import Application

# Upper bounds in seconds: TTFT from a fast cache hit to a stuck queue; TBT around
# the tens of milliseconds a streaming model takes per token.
TTFT_BOUNDS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0)
TBT_BOUNDS = (0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
_BUCKET_NOTE = (
    " Read from the day rollups: a turn counts once the sweep rolled it up; a value up to"
    " 1 % below a bound may count in the next bucket, and _sum is within 1 %."
)
# metric name -> (rollup sketch of milliseconds, bounds, help)
HISTOGRAMS = {
    "llmrum_client_ttft_seconds": (
        "client_ttft_ms",
        TTFT_BOUNDS,
        "Time to first token as the user's browser saw it.",
    ),
    "llmrum_server_ttft_seconds": (
        "server_ttft_ms",
        TTFT_BOUNDS,
        "Time to first token at the gateway (server side).",
    ),
    "llmrum_tbt_seconds": (
        "tbt_ms",
        TBT_BOUNDS,
        "Time between tokens (each turn's median gap).",
    ),
}
OUTCOMES = ("completed", "stopped", "abandoned", "error")


def le_index(sketch_bucket: int, bounds_ms: Sequence[float]) -> int:
    """The first bound at or above the sketch bucket's upper edge (len(bounds): +Inf)."""
    upper = 0.0 if sketch_bucket == ZERO_BUCKET else GAMMA**sketch_bucket
    return bisect.bisect_left(bounds_ms, upper)


@dataclass
class _Series:
    """One application and model: outcome counts and, per histogram, counts per
    ``le`` bound (not yet cumulative) and the sum in milliseconds."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    buckets: dict[str, list[int]] = field(default_factory=dict)
    sums_ms: dict[str, float] = field(default_factory=dict)


def rum_series() -> dict[tuple[str, str], _Series]:
    """(application slug, model) -> its figures, summed over every day rollup.

    Two statements: the applications (a small table), then the day rows by model of
    exactly those applications, so the read walks the rollup's unique index
    (app, dimension, period, …) instead of scanning every minute row."""
    slugs = dict(Application.objects.values_list("id", "slug"))
    bounds_ms = {name: [b * 1000 for b in spec[1]] for name, spec in HISTOGRAMS.items()}
    rows = Rollup.objects.filter(
        app_id__in=list(slugs), dimension="model", period=Rollup.Period.DAY
    ).values_list(
        "app_id",
        "key",
        "turns",
        "stopped",
        "abandoned",
        "errors",
        *(f"sketches__{spec[0]}" for spec in HISTOGRAMS.values()),
    )
    series: dict[tuple[str, str], _Series] = {}
    for app_id, model, turns, stopped, abandoned, errors, *sketches in rows:
        one = series.setdefault((slugs[app_id], model), _Series())
        outcomes = one.outcomes
        outcomes["completed"] += turns - stopped - abandoned - errors
        outcomes["stopped"] += stopped
        outcomes["abandoned"] += abandoned
        outcomes["error"] += errors
        for name, flat in zip(HISTOGRAMS, sketches, strict=True):
            bounds = bounds_ms[name]
            counts = one.buckets.setdefault(name, [0] * (len(bounds) + 1))
            total_ms = 0.0
            for i in range(0, len(flat or ()), 2):
                counts[le_index(flat[i], bounds)] += flat[i + 1]
                total_ms += bucket_value(flat[i]) * flat[i + 1]
            one.sums_ms[name] = one.sums_ms.get(name, 0.0) + total_ms
    return series


class RumCollector(Collector):
    def __init__(self, now: datetime) -> None:
        self.now = now  # the scrape's "now" (rumserver.ops.prometheus); all time is read

    def collect(self) -> Iterator[Metric]:
        series = rum_series()
        labels = ["app", "model"]
        turns = CounterMetricFamily(
            "llmrum_turns",
            "Stitched turns by how they ended. Read from the day rollups: a turn counts once"
            " the sweep rolled it up; a re-stitched turn that changes outcome shows as a reset.",
            labels=[*labels, "outcome"],
        )
        for (slug, model), one in sorted(series.items()):
            for outcome, n in one.outcomes.items():
                turns.add_metric([slug, model, outcome], n)
        yield turns
        for name, (_, bounds, help_text) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, help_text + _BUCKET_NOTE, labels=labels)
            for (slug, model), one in sorted(series.items()):
                counts = one.buckets.get(name, [0] * (len(bounds) + 1))
                cumulative, running = [], 0
                for bound, n in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                    running += n
                    cumulative.append((bound, running))
                family.add_metric(
                    [slug, model], cumulative, sum_value=one.sums_ms.get(name, 0.0) / 1000
                )
            yield family
