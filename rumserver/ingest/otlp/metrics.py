"""From a decoded ``ExportMetricsServiceRequest`` to metric point rows, without the
database.

Gauges, sums and histograms are kept, every name (vLLM's, DCGM's, anyone's) alike,
with their attributes as JSON values within the span limits. Each data point is
checked on its own: a point with a bad time or malformed buckets, or of a kind not
stored (exponential histogram, summary), is refused alone and counted for OTLP's
partial success. A point's series (service, instance, metric, attributes) is hashed
into ``series``, the key that makes a retried export land once.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import msgspec
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from rumserver.ingest.errors import IngestError
from rumserver.ingest.otlp.spans import MAX_INT64
from rumserver.ingest.otlp.spans import _attributes as attributes_of
from rumserver.ingest.otlp.spans import _Cut as Cut
from rumserver.ingest.otlp.spans import _text as text_of
from rumserver.models import MetricPoint

# At most this many data points a request: the Collector's batch processor sends
# 8192 by default; a whole scrape of vLLM plus DCGM is a few thousand.
MAX_DATA_POINTS = 50_000
MAX_BUCKETS = 512  # Prometheus histograms have tens; vLLM's longest has 25
MAX_NAME = 256
SERVICE_NAME = "service.name"
INSTANCE_ID = "service.instance.id"
NO_RECORDED_VALUE = 1  # DataPointFlags: a staleness marker, no value

# Plain ints: msgspec encodes no Django choices enum.
GAUGE, SUM, HISTOGRAM = (int(k) for k in MetricPoint.Kind)
_KINDS = {"gauge": GAUGE, "sum": SUM, "histogram": HISTOGRAM}

# Attributes in a fixed order, so one series hashes the same whatever order it came in.
_canonical = msgspec.json.Encoder(order="sorted").encode


@dataclass
class MetricRow:
    service: str
    instance: str
    name: str
    unit: str
    kind: int
    series: str
    time_ns: int
    start_ns: int
    # Non-finite floats travel as "NaN", "Infinity", "-Infinity": JSON has no such
    # numbers and msgspec would write null; PostgreSQL's float8 reads these strings.
    value: float | str | None
    monotonic: bool
    temporality: int
    count: int | None
    sum: float | str | None
    min: float | str | None
    max: float | str | None
    bounds: list[float]
    bucket_counts: list[int]
    flags: int
    attributes: dict[str, Any]
    resource: dict[str, Any]


@dataclass
class MappedMetrics:
    rows: list[MetricRow] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_data_points(self) -> int:
        return sum(self.rejected.values())

    @property
    def error_message(self) -> str:
        return "; ".join(
            f"{n} data point(s): {reason}" for reason, n in sorted(self.rejected.items())
        )


def _float(number: float) -> float | str:
    if math.isfinite(number):
        return number
    return "NaN" if math.isnan(number) else ("Infinity" if number > 0 else "-Infinity")


@dataclass(frozen=True)
class _Series:
    """What every point of one metric shares."""

    service: str
    instance: str
    resource: dict[str, Any]
    name: str
    unit: str
    kind: int
    monotonic: bool
    temporality: int


def _count_points(request: ExportMetricsServiceRequest) -> int:
    total = 0
    for resource_metrics in request.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                if kind is not None:
                    total += len(getattr(metric, kind).data_points)
    return total


def map_metrics(request: ExportMetricsServiceRequest) -> MappedMetrics:
    total = _count_points(request)
    if total > MAX_DATA_POINTS:
        raise IngestError(413, f"at most {MAX_DATA_POINTS} data points a request, got {total}")
    mapped = MappedMetrics()
    seen: set[tuple[str, int]] = set()
    labels = _LabelSets()
    for resource_metrics in request.resource_metrics:
        cut = Cut()
        resource = attributes_of(resource_metrics.resource.attributes, cut)
        service = str(resource.pop(SERVICE_NAME, "") or "unknown_service")[:128]
        instance = str(resource.pop(INSTANCE_ID, ""))[:256]
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                data_kind = metric.WhichOneof("data")
                if data_kind is None:
                    continue  # a metric without data has no points to refuse
                data = getattr(metric, data_kind)
                kind = _KINDS.get(data_kind)
                if not data.data_points:
                    continue  # nothing to store or refuse
                if kind is None:
                    mapped.rejected[f"{data_kind} is not stored"] += len(data.data_points)
                    continue
                if not metric.name or len(metric.name) > MAX_NAME or "\x00" in metric.name:
                    reason = f"metric name missing or longer than {MAX_NAME} characters"
                    mapped.rejected[reason] += len(data.data_points)
                    continue
                series = _Series(
                    service=service,
                    instance=instance,
                    resource=resource,
                    name=metric.name,
                    unit=text_of(metric.unit, cut, 64),
                    kind=kind,
                    monotonic=bool(kind == SUM and data.is_monotonic),
                    temporality=_temporality(data),
                )
                for point in data.data_points:
                    row, reason = _map_point(point, series, labels)
                    if row is None:
                        mapped.rejected[reason] += 1
                    elif (row.series, row.time_ns) not in seen:
                        # The same point twice in one request: store it once.
                        seen.add((row.series, row.time_ns))
                        mapped.rows.append(row)
    return mapped


def _temporality(data: Any) -> int:
    value = getattr(data, "aggregation_temporality", 0)  # gauges have none
    return value if value in (1, 2) else 0


def _series_key(series: _Series, attributes: dict[str, Any]) -> str:
    identity = [series.service, series.instance, series.name, attributes]
    return hashlib.blake2b(_canonical(identity), digest_size=16).hexdigest()


class _LabelSets:
    """Point attributes as JSON values, each distinct set mapped once a request: a
    scrape repeats a handful of label sets (vLLM's ``model_name`` and ``engine``) on
    every metric, and mapping them is most of a point's cost. The dicts are shared
    between rows, which only read them."""

    def __init__(self) -> None:
        self._known: dict[tuple[bytes, ...], dict[str, Any]] = {}

    def of(self, pairs: Any) -> dict[str, Any]:
        key = tuple(pair.SerializeToString() for pair in pairs)
        attributes = self._known.get(key)
        if attributes is None:
            attributes = self._known[key] = attributes_of(pairs, Cut())
        return attributes


def _map_point(point: Any, series: _Series, labels: _LabelSets) -> tuple[MetricRow | None, str]:
    time_ns, start_ns = point.time_unix_nano, point.start_time_unix_nano
    if not 0 < time_ns <= MAX_INT64 or start_ns > MAX_INT64:
        return None, "missing or out-of-range time"
    if start_ns > time_ns:
        return None, "time_order: start time after the point's time"
    attributes = labels.of(point.attributes)
    row = MetricRow(
        service=series.service,
        instance=series.instance,
        name=series.name,
        unit=series.unit,
        kind=series.kind,
        series=_series_key(series, attributes),
        time_ns=time_ns,
        start_ns=start_ns,
        value=None,
        monotonic=series.monotonic,
        temporality=series.temporality,
        count=None,
        sum=None,
        min=None,
        max=None,
        bounds=[],
        bucket_counts=[],
        flags=point.flags & 0xFFFF,  # the defined flags; the column is 32-bit signed
        attributes=attributes,
        resource=series.resource,
    )
    if series.kind == HISTOGRAM:
        return _read_histogram(point, row)
    value_kind = point.WhichOneof("value")
    if value_kind == "as_int":
        row.value = float(point.as_int)
    elif value_kind == "as_double":
        row.value = _float(point.as_double)
    elif not row.flags & NO_RECORDED_VALUE:
        return None, "no value (as_double or as_int)"
    return row, ""


def _read_histogram(point: Any, row: MetricRow) -> tuple[MetricRow | None, str]:
    bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
    if len(counts) > MAX_BUCKETS:
        return None, f"more than {MAX_BUCKETS} histogram buckets"
    if counts and len(counts) != len(bounds) + 1:
        return None, "histogram needs one bucket count more than explicit bounds"
    if not counts and bounds:
        return None, "histogram has explicit bounds but no bucket counts"
    if not all(math.isfinite(b) for b in bounds) or any(
        b >= after for b, after in zip(bounds, bounds[1:], strict=False)
    ):
        return None, "histogram bounds must be finite and increasing"
    if point.count > MAX_INT64 or any(c > MAX_INT64 for c in counts):
        return None, "histogram count out of range"
    row.bounds, row.bucket_counts, row.count = bounds, counts, point.count
    if point.HasField("sum"):
        row.sum = _float(point.sum)
    if point.HasField("min"):
        row.min = _float(point.min)
    if point.HasField("max"):
        row.max = _float(point.max)
    return row, ""
