"""The built-in scraper (``LLMRUM_SCRAPE_TARGETS``): Prometheus text endpoints such as
vLLM's and DCGM's ``/metrics``, read without a Collector into the same store as
``POST /v1/metrics``.

A scrape is turned into the OTLP request a Collector's ``prometheus`` receiver would
send (counters as cumulative monotonic sums, histograms with per-bucket counts from
the cumulative ``_bucket{le=}`` samples, ``_sum`` and ``_count``) and stored through
the OTLP path's own mapping, so both paths write the same rows. ``service.name`` is
``llmrum-scraper`` (who scraped, where a Collector puts its job name) and
``service.instance.id`` the endpoint's URL without credentials.

A target that is down, slow or answers garbage is logged and counted
(``llmrum_scrapes_total{outcome}``: ok, down, timeout, invalid, unknown_app,
store_failed) and never stops the others.
"""

from __future__ import annotations

import logging
import math
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

from django.db import DatabaseError, transaction
from google.protobuf.internal.containers import RepeatedCompositeFieldContainer
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE as CUMULATIVE_TEMPORALITY,
)
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    Metric,
)
from prometheus_client import Counter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from rumserver.ingest.errors import IngestError
from rumserver.ingest.otlp.metric_store import SERIES_IDS, store_metric_points
from rumserver.ingest.otlp.metrics import INSTANCE_ID, SERVICE_NAME, map_metrics
from rumserver.ingest.scrape_targets import ScrapeTarget
from rumserver.models import Application

logger = logging.getLogger(__name__)

SCRAPER_SERVICE = "llmrum-scraper"
MAX_BODY_BYTES = 16 * 1024 * 1024  # vLLM plus DCGM is tens of kB
CUMULATIVE = CUMULATIVE_TEMPORALITY
# Classic text keeps vLLM's colons; OpenMetrics without escaping=allow-utf-8 would
# rename them (prometheus/client_python#1177).
ACCEPT = "text/plain;version=0.0.4"

SCRAPES = Counter("llmrum_scrapes", "Built-in scrapes by outcome.", ["outcome"])


class ScrapeFailed(Exception):
    def __init__(self, outcome: str, detail: str) -> None:
        super().__init__(detail)
        self.outcome = outcome


@dataclass
class ScrapeResult:
    stored: dict[str, int] = field(default_factory=dict)  # url -> points stored
    failed: dict[str, str] = field(default_factory=dict)  # url -> outcome


def scrape_run(
    *,
    targets: Iterable[ScrapeTarget],
    now: datetime,
    timeout: float,
    fetch: Callable[[str, float], str] | None = None,
) -> ScrapeResult:
    """Fetch every target at once (threads: the waiting is on the network), then parse
    and store each in this thread, one target's failure counted and logged alone."""
    targets = list(targets)
    fetch = fetch or fetch_text
    result = ScrapeResult()
    if not targets:
        return result
    with ThreadPoolExecutor(max_workers=min(8, len(targets))) as pool:
        futures = [pool.submit(fetch, target.url, timeout) for target in targets]
    for target, future in zip(targets, futures, strict=True):
        try:
            stored = scrape_store(target=target, text=future.result(), now=now)
        except ScrapeFailed as failure:
            logger.warning("scrape of %s failed (%s): %s", target.url, failure.outcome, failure)
            SCRAPES.labels(failure.outcome).inc()
            result.failed[target.url] = failure.outcome
            continue
        SCRAPES.labels("ok").inc()
        result.stored[target.url] = stored
    return result


def fetch_text(url: str, timeout: float) -> str:
    request = urllib.request.Request(url, headers={"Accept": ACCEPT})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body: bytes = response.read(MAX_BODY_BYTES + 1)
    except TimeoutError as error:
        raise ScrapeFailed("timeout", str(error)) from None
    except OSError as error:  # refused, DNS, HTTP error status (URLError, HTTPError)
        reason = getattr(error, "reason", None)
        outcome = "timeout" if isinstance(reason, TimeoutError) else "down"
        raise ScrapeFailed(outcome, str(error)) from None
    if len(body) > MAX_BODY_BYTES:
        raise ScrapeFailed("invalid", f"more than {MAX_BODY_BYTES} bytes")
    return body.decode("utf-8", errors="replace")


def scrape_store(*, target: ScrapeTarget, text: str, now: datetime) -> int:
    app_id = Application.objects.filter(slug=target.app_slug).values_list("id", flat=True).first()
    if app_id is None:
        raise ScrapeFailed("unknown_app", f"no application {target.app_slug!r}")
    try:
        request = exposition_to_otlp(
            text, instance=public_url(target.url), time_ns=int(now.timestamp() * 1e9)
        )
        mapped = map_metrics(request, SERIES_IDS.of(app_id))
    except (ValueError, IndexError, TypeError, IngestError) as error:
        raise ScrapeFailed("invalid", str(error) or type(error).__name__) from None
    try:
        # A savepoint: a write refused for this target leaves the others' usable.
        with transaction.atomic():
            store_metric_points(app_id=app_id, mapped=mapped, now=now)
    except DatabaseError as error:
        raise ScrapeFailed("store_failed", str(error)) from None
    return mapped.accepted_data_points


def public_url(url: str) -> str:
    """The URL without user:password@, to be shown as the instance."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def exposition_to_otlp(text: str, *, instance: str, time_ns: int) -> ExportMetricsServiceRequest:
    """Prometheus text exposition as one OTLP metrics request. ``*_created`` samples
    are dropped (STANDARDS §10.3); summaries, info and state sets are not stored."""
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    _put(resource_metrics.resource.attributes, {SERVICE_NAME: SCRAPER_SERVICE})
    _put(resource_metrics.resource.attributes, {INSTANCE_ID: instance})
    scope = resource_metrics.scope_metrics.add()
    scope.scope.name = "llmrum.scrape"
    metrics: dict[tuple[str, str], Metric] = {}

    def metric(name: str, kind: str) -> Metric:
        if (name, kind) not in metrics:
            metrics[name, kind] = scope.metrics.add(name=name)
        return metrics[name, kind]

    for family in text_string_to_metric_families(text):
        samples = [s for s in family.samples if not s.name.endswith("_created")]
        if family.type == "counter":
            for sample in samples:
                data = metric(sample.name, "sum").sum
                data.is_monotonic, data.aggregation_temporality = True, CUMULATIVE
                point = data.data_points.add(time_unix_nano=_time(sample, time_ns))
                point.as_double = float(sample.value)
                _put(point.attributes, sample.labels)
        elif family.type in ("gauge", "unknown"):
            for sample in samples:
                point = metric(sample.name, "gauge").gauge.data_points.add(
                    time_unix_nano=_time(sample, time_ns)
                )
                point.as_double = float(sample.value)
                _put(point.attributes, sample.labels)
        elif family.type == "histogram" and samples:
            _add_histograms(metric(family.name, "histogram"), samples, time_ns)
    return request


def _add_histograms(metric: Metric, samples: list[Sample], time_ns: int) -> None:
    """One data point per label set (``le`` aside): cumulative ``_bucket`` counts
    become OTLP's per-bucket counts, the ``+Inf`` bucket the last one."""
    data = metric.histogram
    data.aggregation_temporality = CUMULATIVE
    grouped: dict[tuple[tuple[str, str], ...], dict[str, list[Sample]]] = {}
    for sample in samples:
        labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        suffix = sample.name.rpartition("_")[2]
        grouped.setdefault(labels, {}).setdefault(suffix, []).append(sample)
    for labels, parts in grouped.items():
        buckets = sorted((float(s.labels["le"]), float(s.value)) for s in parts.get("bucket", []))
        counts = [round(b[1]) for b in buckets]
        if not buckets or not math.isinf(buckets[-1][0]):
            total = parts.get("count")
            counts.append(round(total[0].value) if total else (counts[-1] if counts else 0))
        first = (parts.get("count") or parts.get("bucket") or [samples[0]])[0]
        point = data.data_points.add(time_unix_nano=_time(first, time_ns))
        point.explicit_bounds.extend(le for le, _ in buckets if not math.isinf(le))
        point.bucket_counts.extend(
            max(0, c - before) for c, before in zip(counts, [0, *counts[:-1]], strict=True)
        )
        point.count = round(parts["count"][0].value) if "count" in parts else counts[-1]
        if "sum" in parts:
            point.sum = float(parts["sum"][0].value)
        _put(point.attributes, dict(labels))


def _time(sample: Sample, default_ns: int) -> int:
    return default_ns if sample.timestamp is None else int(float(sample.timestamp) * 1e9)


def _put(target: RepeatedCompositeFieldContainer[KeyValue], labels: dict[str, str]) -> None:
    for key, value in labels.items():
        pair = target.add(key=key)
        pair.value.string_value = value
