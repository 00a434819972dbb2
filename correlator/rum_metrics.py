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


_BOUNDS_MS = {name: [b * 1000 for b in spec[1]] for name, spec in HISTOGRAMS.items()}
# Per histogram, sketch bucket -> (its le index, its midpoint in ms): a few hundred
# buckets ever occur, and a year of day rows holds millions of (bucket, count) pairs.
_BUCKET_MAP: dict[str, dict[int, tuple[int, float]]] = {name: {} for name in HISTOGRAMS}

# One day row's histograms: per histogram, its counts per le bound and its sum in ms.
RowHistograms = tuple[tuple[list[int], float], ...]
# This process's conversions, by row id, with the ``computed_at`` they were made from.
# A day row changes only when a rebuild rewrites it (today's, mostly), so a scrape
# reads the sketches of the rows rebuilt since the last one, not of a year of days.
_converted: dict[int, tuple[datetime, RowHistograms]] = {}
_SKETCH_READ_BATCH = 500


def _histograms_of(flats: Sequence[list[int] | None]) -> RowHistograms:
    out = []
    for name, flat in zip(HISTOGRAMS, flats, strict=True):
        bounds, known = _BOUNDS_MS[name], _BUCKET_MAP[name]
        counts = [0] * (len(bounds) + 1)
        total_ms = 0.0
        flat = flat or []
        for i in range(0, len(flat), 2):
            index, n = flat[i], flat[i + 1]
            mapped = known.get(index)
            if mapped is None:
                mapped = known[index] = (le_index(index, bounds), bucket_value(index))
            counts[mapped[0]] += n
            total_ms += mapped[1] * n
        out.append((counts, total_ms))
    return tuple(out)


@dataclass
class _Series:
    """One application and model: outcome counts and, per histogram, counts per
    ``le`` bound (not yet cumulative) and the sum in milliseconds."""

    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    buckets: dict[str, list[int]] = field(
        default_factory=lambda: {name: [0] * (len(b) + 1) for name, b in _BOUNDS_MS.items()}
    )
    sums_ms: dict[str, float] = field(default_factory=lambda: dict.fromkeys(HISTOGRAMS, 0.0))


def _convert_stale(computed: dict[int, datetime]) -> bool:
    """Convert the sketches of the rows (id -> computed_at) this process has not
    converted at that computed_at; False if one of them is gone meanwhile."""
    stale = [row_id for row_id, at in computed.items() if _converted.get(row_id, (None,))[0] != at]
    sketch_fields = [f"sketches__{spec[0]}" for spec in HISTOGRAMS.values()]
    for lo in range(0, len(stale), _SKETCH_READ_BATCH):
        batch = Rollup.objects.filter(id__in=stale[lo : lo + _SKETCH_READ_BATCH])
        for row_id, at, *flats in batch.values_list("id", "computed_at", *sketch_fields):
            _converted[row_id] = (at, _histograms_of(flats))
    return all(_converted.get(row_id, (None,))[0] == computed[row_id] for row_id in stale)


def rum_series() -> dict[tuple[str, str], _Series]:
    """(application slug, model) -> its figures, summed over every day rollup.

    The applications (a small table), then the day rows by model of exactly those
    applications, so the read walks the rollup's unique index (app, dimension,
    period, …) instead of scanning every minute row; then, by primary key, the
    histogram sketches of the rows this process has not converted yet."""
    slugs = dict(Application.objects.values_list("id", "slug"))
    # A rebuild replaces a row (delete, insert) between the two reads now and then:
    # read again rather than leave its day out, which would lower the sums once.
    for _ in range(3):
        rows = list(
            Rollup.objects.filter(
                app_id__in=list(slugs), dimension="model", period=Rollup.Period.DAY
            ).values_list(
                "id", "app_id", "key", "turns", "stopped", "abandoned", "errors", "computed_at"
            )
        )
        if _convert_stale({row[0]: row[7] for row in rows}):
            break
    for gone in _converted.keys() - {row[0] for row in rows}:
        _converted.pop(gone, None)

    series: dict[tuple[str, str], _Series] = {}
    for row_id, app_id, model, turns, stopped, abandoned, errors, _ in rows:
        one = series.setdefault((slugs[app_id], model), _Series())
        outcomes = one.outcomes
        outcomes["completed"] += turns - stopped - abandoned - errors
        outcomes["stopped"] += stopped
        outcomes["abandoned"] += abandoned
        outcomes["error"] += errors
        converted = _converted.get(row_id)
        if converted is None:  # replaced three times running: its histograms next scrape
            continue
        for name, (counts, total_ms) in zip(HISTOGRAMS, converted[1], strict=True):
            summed = one.buckets[name]
            for i, n in enumerate(counts):
                summed[i] += n
            one.sums_ms[name] += total_ms
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
                counts = one.buckets[name]
                cumulative, running = [], 0
                for bound, n in zip([*map(str, bounds), "+Inf"], counts, strict=True):
                    running += n
                    cumulative.append((bound, running))
                family.add_metric(
                    [slug, model], cumulative, sum_value=one.sums_ms.get(name, 0.0) / 1000
                )
            yield family
