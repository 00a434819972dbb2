"""``GET /metrics``: Prometheus text for whoever runs llmrum.

Counters are kept by the web processes that count (ingest's are in
``rumserver.ingest.counters``) and summed across them through prometheus-client's
multiprocess files. Figures read from the database at scrape time, so that they hold
wherever the workers run, come from collectors that other apps register here (the
correlator's backlog and sweeps: ``correlator.telemetry``; the RUM histograms and
turn counters: ``correlator.rum_metrics``), so rumserver imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from prometheus_client import CollectorRegistry, generate_latest, multiprocess
from prometheus_client.registry import Collector

# Makes a collector for one scrape, given the scrape's own "now".
CollectorFactory = Callable[[datetime], Collector]

_factories: list[CollectorFactory] = []


def collector_register(factory: CollectorFactory) -> None:
    """Collect ``factory(now)`` on every scrape (an app's ``ready()`` calls this;
    registering the same factory again changes nothing)."""
    if factory not in _factories:
        _factories.append(factory)


def metrics_text(*, now: datetime) -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    for factory in _factories:
        registry.register(factory(now))
    return generate_latest(registry)
