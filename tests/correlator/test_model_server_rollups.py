"""The model-servers answer read from the rollup levels (minutes, five minutes, hours,
three and six hours, days; PostgreSQL) equals the figures computed here from the raw points,
for every range the API and the page chart: irregular samples, counter resets, gaps,
a server appearing mid-range, the first and the current hour partial, late points
after the rollups were made, and histograms beside them. On SQLite the answer reads
the points, and is held to the same figures."""

from __future__ import annotations

import importlib
import random
from bisect import bisect_right
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.db import connection
from django.utils import timezone

from correlator.analytics import figures
from correlator.analytics.model_servers import _FIGURE_OF, FIGURES, LOOKBACK, model_server_series
from correlator.reports.forms import step_for
from correlator.retention import retention_run
from rumserver import metric_rollups
from rumserver.models import MetricDirty, MetricPoint, MetricRollup, MetricSeries
from tests import factories

pytestmark = pytest.mark.django_db

GAUGE, SUM, HISTOGRAM = (MetricPoint.Kind.GAUGE, MetricPoint.Kind.SUM,
                         MetricPoint.Kind.HISTOGRAM)  # fmt: skip
NS = 1_000_000_000


def _ns(at: datetime) -> int:
    return round(at.timestamp() * 1e9)


class Store:
    """Points written as ingest writes them (rows and marks), and kept here too, so
    the test computes the answer from them on its own."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.series: dict[int, MetricSeries] = {}
        self.points: dict[int, list[tuple[int, float]]] = defaultdict(list)

    def make(self, service: str, instance: str, name: str, kind: int, labels: str = "0") -> int:
        series = MetricSeries.objects.create(
            app=self.app, key=f"{service}{instance}{name}{labels}"[-32:], service=service,
            instance=instance, name=name, kind=kind, monotonic=kind == SUM,
            temporality=2 if kind != GAUGE else 0, attributes={"engine": labels},
            created_at=timezone.now(),
        )  # fmt: skip
        self.series[series.pk] = series
        return series.pk

    def put(self, series: int, points: list[tuple[int, float]]) -> None:
        MetricPoint.objects.bulk_create(
            [MetricPoint(series_id=series, time_ns=t, value=v) for t, v in points],
            batch_size=5000,
        )
        metric_rollups.mark(self.app.pk, [t for t, _ in points])
        self.points[series] += points

    def truth(self, since: datetime, until: datetime, step: timedelta) -> list[dict[str, Any]]:
        """Each server's figures per step, from the points: gauges averaged a series
        then combined; counters' increases (a lower value counts whole) over the
        seconds between consecutive samples, the later in the step, the earlier at
        most LOOKBACK before the range."""
        edges = [_ns(lo) for lo, _ in figures.step_bounds(since, until, step)] + [_ns(until)]
        lo, hi = _ns(since - LOOKBACK), _ns(until)

        def step_of(t: int) -> int:
            return bisect_right(edges, t) - 1

        sums: dict[tuple[str, str], dict[str, dict[int, dict[int, list[float]]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(dict))
        )
        for pk, points in self.points.items():
            s = self.series[pk]
            if s.name not in _FIGURE_OF:
                continue
            figure = _FIGURE_OF[s.name]
            before: tuple[int, float] | None = None
            for t, v in sorted(p for p in points if lo <= p[0] < hi):
                if t >= edges[0]:
                    totals = sums[(s.service, s.instance)][figure.key][step_of(t)]
                    a, b = totals.setdefault(pk, [0.0, 0.0])
                    if figure.kind == "gauge":
                        totals[pk] = [a + 1, b + v]
                    elif before is not None:
                        increase = v if v < before[1] else v - before[1]
                        totals[pk] = [a + increase, b + (t - before[0]) / 1e9]
                before = (t, v)
        servers = []
        for (service, instance), by_figure in sorted(sums.items()):
            server: dict[str, Any] = {"service": service, "instance": instance}
            for figure in FIGURES:
                values: list[float | None] = []
                for i in range(len(edges) - 1):
                    rate = figure.kind == "rate"
                    per_series = [
                        a / b if rate else b / a
                        for a, b in by_figure[figure.key][i].values()
                        if (b if rate else a) > 0
                    ]
                    values.append(figure.combine(per_series) if per_series else None)
                server[figure.key] = values
            servers.append(server)
        return servers


def _samples(rng: random.Random, start: datetime, end: datetime,
             gaps: list[tuple[datetime, datetime]] = ()) -> list[int]:  # fmt: skip
    """Irregular scrape times (30 to 150 s apart) in [start, end) outside the gaps."""
    times, at = [], _ns(start) + rng.randrange(NS)
    while at < _ns(end):
        if not any(_ns(a) <= at < _ns(b) for a, b in gaps):
            times.append(at)
        at += rng.randrange(30 * NS, 150 * NS)
    return times


def _counter(rng: random.Random, times: list[int]) -> list[tuple[int, float]]:
    """A cumulative counter that restarts from a small value now and then."""
    total, points = rng.randrange(1000), []
    for t in times:
        total = float(rng.randrange(5)) if rng.random() < 0.002 else total + rng.randrange(40)
        points.append((t, total))
    return points


@pytest.fixture
def store() -> Store:
    """Eight days up to now of a vLLM server (two engines' gauges, two counters) and,
    from the middle of the range, a DCGM exporter; a 3-hour outage; a histogram."""
    rng = random.Random(14)
    store = Store(factories.make_app("Levels").application)
    now = timezone.now()
    start = now - timedelta(days=8)
    outage = [(now - timedelta(days=2, hours=3), now - timedelta(days=2))]
    vllm = ("vllm", "http://vllm-0:8000/metrics")
    for engine in ("0", "1"):
        running = store.make(*vllm, "vllm:num_requests_running", GAUGE, engine)
        store.put(running, [(t, float(rng.randrange(20)))
                            for t in _samples(rng, start, now, outage)])  # fmt: skip
    kv = store.make(*vllm, "vllm:kv_cache_usage_perc", GAUGE)
    store.put(kv, [(t, rng.random()) for t in _samples(rng, start, now)])
    for name in ("vllm:generation_tokens_total", "vllm:num_preemptions_total"):
        counter = store.make(*vllm, name, SUM)
        store.put(counter, _counter(rng, _samples(rng, start, now, outage)))
    gpu = store.make("dcgm", "http://dcgm:9400/metrics", "DCGM_FI_DEV_GPU_UTIL", GAUGE)
    store.put(gpu, [(t, float(rng.randrange(101)))
                    for t in _samples(rng, now - timedelta(days=3, hours=7), now)])  # fmt: skip
    # A histogram (no value): no rollups, no figure.
    ttft = store.make(*vllm, "vllm:time_to_first_token_seconds", HISTOGRAM)
    MetricPoint.objects.bulk_create(
        MetricPoint(series_id=ttft, time_ns=t, count=10, sum=2.5, bounds=[0.1, 1.0],
                    bucket_counts=[4, 5, 1])
        for t in _samples(rng, now - timedelta(hours=5), now)
    )  # fmt: skip
    return store


def _ranges(now: datetime) -> list[tuple[datetime, datetime]]:
    """The API's ranges (the step by length) and the page's: partial first and last
    hours, the current minute, a range ending in the past, a range over the outage."""
    minute = now.replace(second=0, microsecond=0)
    end = minute + timedelta(minutes=1)  # the page's presets: to the current minute's end
    return [
        (end - timedelta(days=7), end),
        (minute - timedelta(days=7, minutes=23), minute),
        (minute - timedelta(days=30), minute),  # one-day steps, the first days empty
        (minute - timedelta(hours=24, minutes=11), minute - timedelta(minutes=11)),
        (minute - timedelta(days=2, hours=5, minutes=7), minute - timedelta(hours=37)),
        (end - timedelta(hours=1), end),
        # From the end of the outage: the counters' samples before it are hours older
        # than the range (more than LOOKBACK), so their first rate starts after it.
        (minute - timedelta(days=2), minute - timedelta(days=2) + timedelta(hours=6)),
    ]


def _check(store: Store, now: datetime) -> None:
    for since, until in _ranges(now):
        step = step_for(until - since)
        answer = model_server_series(app=store.app, since=since, until=until, step=step)
        expected = store.truth(since, until, step)
        assert [(s["service"], s["instance"]) for s in answer["servers"]] == [
            (s["service"], s["instance"]) for s in expected
        ], (since, until)
        for got, want in zip(answer["servers"], expected, strict=True):
            for figure in FIGURES:
                values = got[figure.key]
                assert [v is None for v in values] == [v is None for v in want[figure.key]], (
                    since, until, figure.key)  # fmt: skip
                assert values == pytest.approx(want[figure.key], rel=1e-9), (
                    since, until, figure.key)  # fmt: skip


def test_every_range_reads_the_levels_and_answers_as_the_points_do(store):
    now = timezone.now()
    rolls = metric_rollups.kept()
    assert (metric_rollups.refresh_all() > 0) == rolls  # what beat runs every minute
    levels = set(MetricRollup.objects.values_list("seconds", flat=True))
    assert levels == ({60, 300, 3600, 10800, 21600, 86400} if rolls else set())
    assert not MetricRollup.objects.filter(series__name="vllm:time_to_first_token_seconds")
    # As live ingest leaves it: the last minutes and the current hour still marked.
    running = next(pk for pk, s in store.series.items() if s.name == "vllm:num_requests_running")
    store.put(running, [(_ns(now) - 40 * NS, 3.0), (_ns(now) - 5 * NS, 17.0)])
    _check(store, now)


def test_late_points_and_a_restart_change_the_levels_that_hold_them(store):
    now = timezone.now()
    metric_rollups.refresh_all()
    _check(store, now)
    by_name = {s.name: pk for pk, s in store.series.items() if s.instance.startswith("http://v")}
    tokens = by_name["vllm:generation_tokens_total"]
    # Into a day and a three-hour period already made: a gauge sample and a counter
    # restart; and a counter sample in the outage, the new prior of the first row after
    # it (an hour, its three hours and its day, whose own points did not change).
    outage_end = _ns(now - timedelta(days=2))
    late = [(_ns(now - timedelta(days=4, hours=2, minutes=3)), 0.0),
            (outage_end - 70 * NS, 10.0 ** 9)]  # fmt: skip
    store.put(tokens, late)
    store.put(by_name["vllm:kv_cache_usage_perc"], [(_ns(now - timedelta(days=5)), 0.99)])
    _check(store, now)  # a read: those hours marked, their minutes read
    metric_rollups.refresh_all()  # beat
    assert not MetricDirty.objects.filter(app=store.app)
    _check(store, now)


def test_a_migrated_store_gets_the_same_levels_and_priors():
    """Rows made before the levels (no prior, no five minutes, three hours or days)
    get them from the migration as refresh makes them."""
    if not metric_rollups.kept():
        pytest.skip("rollups are kept on PostgreSQL only")
    rng = random.Random(7)
    store = Store(factories.make_app("Migrated").application)
    now = timezone.now()
    counter = store.make("vllm", "v", "vllm:prompt_tokens_total", SUM)
    store.put(counter, _counter(rng, _samples(rng, now - timedelta(days=2), now)))
    metric_rollups.refresh_all()
    fields = [f.name for f in MetricRollup._meta.concrete_fields if f.name != "series"]
    made = sorted(MetricRollup.objects.values_list(*fields))
    MetricRollup.objects.exclude(seconds__in=(60, 3600)).delete()
    MetricRollup.objects.update(prior_ns=None, prior_increase=0.0)
    migration = importlib.import_module("rumserver.migrations.0014_metric_rollup_levels")
    with connection.schema_editor() as schema_editor:
        migration.build_levels(django_apps, schema_editor)
    rebuilt = sorted(MetricRollup.objects.values_list(*fields))
    assert len(rebuilt) == len(made)
    for got, want in zip(rebuilt, made, strict=True):
        assert got == pytest.approx(want, rel=1e-12)


def test_retention_drops_the_minute_levels_and_old_marks_and_keeps_the_hours(store):
    if not metric_rollups.kept():
        pytest.skip("rollups are kept on PostgreSQL only")
    metric_rollups.refresh_all()
    now = timezone.now()
    store.app.retention_days = 3
    store.app.save(update_fields=["retention_days"])
    old = _ns(now - timedelta(days=5))
    metric_rollups.mark(store.app.pk, [old])
    kept = {
        seconds: MetricRollup.objects.filter(seconds=seconds, start_ns__lt=old).count()
        for seconds in (3600, 10800, 21600, 86400)
    }
    assert all(kept.values())
    retention_run(now=now)
    cut = _ns(now - timedelta(days=3))
    rollups = MetricRollup.objects.filter(series__app=store.app)
    assert not rollups.filter(seconds__in=(60, 300), start_ns__lt=cut - 300 * NS)
    assert rollups.filter(seconds=60, start_ns__gte=cut)
    for seconds in (3600, 10800, 21600, 86400):
        assert rollups.filter(seconds=seconds, start_ns__lt=old).count() == kept[seconds]
    assert not MetricDirty.objects.filter(app=store.app, start_ns__lt=cut - 3600 * NS)
