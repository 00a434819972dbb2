"""Operational metrics for whoever runs llmrum: ``GET /metrics`` in Prometheus text.

Counters are incremented by the ingest views (a few dict lookups, no I/O beyond
prometheus-client's mmap'd files); backlog, lag and sweep figures are read from
the database at scrape time, so they hold wherever the workers run.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BEACONS = Counter("llmrum_beacon_requests", "Beacon requests by answer.", ["outcome", "reason"])
BEACON_EVENTS = Counter("llmrum_beacon_events", "Beacon events by result.", ["outcome", "reason"])
OTLP_REQUESTS = Counter(
    "llmrum_otlp_requests", "OTLP/HTTP requests by answer.", ["outcome", "reason"]
)
SPANS = Counter("llmrum_spans", "OTLP spans by result.", ["outcome", "reason"])
SDK_DROPPED = Counter(
    "llmrum_sdk_dropped_events", "Events browsers dropped from a full queue (as they report)."
)

_REASONS = {
    400: "invalid_body", 401: "unauthenticated", 403: "forbidden", 405: "method",
    413: "too_large", 415: "unsupported_type", 429: "rate_limited", 503: "storage_unavailable",
}  # fmt: skip


def reason_of(status: int) -> str:
    return "ok" if status < 300 else _REASONS.get(status, str(status))


def count_request(counter: Counter, status: int) -> None:
    counter.labels("accepted" if status < 300 else "rejected", reason_of(status)).inc()


class _DatabaseCollector(Collector):
    def __init__(self, now: datetime) -> None:
        self.now = now

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Min

        from correlator.models import SweepRun, Trace
        from rumserver.models import DirtyTrace

        backlog = DirtyTrace.objects.aggregate(n=Min("id"), oldest=Min("first_marked_at"))
        count = DirtyTrace.objects.count()
        yield GaugeMetricFamily("llmrum_dirty_traces", "Traces waiting for the correlator.", count)
        oldest = backlog["oldest"]
        lag = (self.now - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "llmrum_sweep_lag_seconds", "Age of the oldest trace waiting for the sweep.", lag
        )
        yield GaugeMetricFamily(
            "llmrum_traces_open", "Stitched traces still in their quiet period.",
            Trace.objects.filter(state=Trace.State.OPEN).count(),
        )  # fmt: skip
        from correlator.rollups import rollups_backlog

        pending, oldest_mark = rollups_backlog()
        yield GaugeMetricFamily(
            "llmrum_rollups_pending", "Minutes, hours and days waiting for a rollup rebuild.",
            pending,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "llmrum_rollup_lag_seconds",
            "Age of the oldest rollup waiting for a rebuild (a minute waits until unmarked for "
            "LLMRUM_ROLLUP_SETTLE_SECONDS, so up to a minute or two is normal under traffic).",
            (self.now - oldest_mark).total_seconds() if oldest_mark else 0.0,
        )  # fmt: skip
        last = SweepRun.objects.order_by("-started_at").first()
        if last is not None:
            yield GaugeMetricFamily(
                "llmrum_sweep_duration_seconds", "Duration of the last sweep.", last.seconds
            )
            yield GaugeMetricFamily(
                "llmrum_sweep_age_seconds", "Seconds since the last sweep started.",
                (self.now - last.started_at).total_seconds(),
            )  # fmt: skip
            yield GaugeMetricFamily(
                "llmrum_sweep_stitched", "Traces stitched by the last sweep.", last.stitched
            )


def metrics_text(*, now: datetime) -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(_DatabaseCollector(now))
    return generate_latest(registry)
