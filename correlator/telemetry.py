"""The correlator's figures on ``GET /metrics``: its backlog, lag and last sweep, read
from the database at scrape time so that they hold wherever the workers run.
``CorrelatorConfig.ready`` registers the collector with ``rumserver.ops.prometheus``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from django.db.models import Min
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from correlator.analytics.rollups import rollups_backlog
from correlator.models import SweepRun, Trace
from rumserver.models import DirtyTrace


def _seconds_since(moment: datetime | None, now: datetime) -> float:
    return (now - moment).total_seconds() if moment else 0.0


class CorrelatorCollector(Collector):
    def __init__(self, now: datetime) -> None:
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        oldest = DirtyTrace.objects.aggregate(oldest=Min("first_marked_at"))["oldest"]
        yield GaugeMetricFamily(
            "llmrum_dirty_traces",
            "Traces waiting for the correlator.",
            DirtyTrace.objects.count(),
        )
        yield GaugeMetricFamily(
            "llmrum_sweep_lag_seconds",
            "Age of the oldest trace waiting for the sweep.",
            _seconds_since(oldest, self.now),
        )
        yield GaugeMetricFamily(
            "llmrum_traces_open",
            "Stitched traces still in their quiet period.",
            Trace.objects.filter(state=Trace.State.OPEN).count(),
        )
        pending, oldest_mark = rollups_backlog()
        yield GaugeMetricFamily(
            "llmrum_rollups_pending",
            "Minutes, hours and days waiting for a rollup rebuild.",
            pending,
        )
        yield GaugeMetricFamily(
            "llmrum_rollup_lag_seconds",
            "Age of the oldest rollup waiting for a rebuild (a minute waits until unmarked for "
            "LLMRUM_ROLLUP_SETTLE_SECONDS, so up to a minute or two is normal under traffic).",
            _seconds_since(oldest_mark, self.now),
        )
        last = SweepRun.objects.order_by("-started_at").first()
        if last is not None:
            yield GaugeMetricFamily(
                "llmrum_sweep_duration_seconds", "Duration of the last sweep.", last.seconds
            )
            yield GaugeMetricFamily(
                "llmrum_sweep_age_seconds",
                "Seconds since the last sweep started.",
                _seconds_since(last.started_at, self.now),
            )
            yield GaugeMetricFamily(
                "llmrum_sweep_stitched", "Traces stitched by the last sweep.", last.stitched
            )
