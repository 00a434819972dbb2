"""From a decoded ``ExportMetricsServiceRequest`` to the series and thin point rows of
the metric store, without the database.

Gauges, sums and histograms are kept, every name (vLLM's, DCGM's, anyone's) alike.
Each data point is checked on its own: a point with a bad time or malformed buckets,
or of a kind not stored (exponential histogram, summary), is refused alone and counted
for OTLP's partial success. A point names its series by a ``SeriesRef`` (what the
metric says about it and the raw bytes of its attributes); the store turns refs into
series ids once per process, so a point costs a few attribute reads and a tuple. The
series' attributes are mapped to JSON values once a request, for the store to create a
series it does not know; ``series_key`` hashes a series' identity.
"""

from __future__ import annotations

import hashlib
import math
import operator
from collections import Counter
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import msgspec
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from rumserver.ingest.errors import IngestError
from rumserver.ingest.otlp.spans import MAX_INT64
from rumserver.ingest.otlp.spans import _attributes as attributes_of
from rumserver.ingest.otlp.spans import _Cut as Cut
from rumserver.ingest.otlp.spans import _text as text_of
from rumserver.models import MetricSeries

# At most this many data points a request: the Collector's batch processor sends
# 8192 by default; a whole scrape of vLLM plus DCGM is a few thousand.
MAX_DATA_POINTS = 50_000
MAX_BUCKETS = 512  # Prometheus histograms have tens; vLLM's longest has 25
MAX_NAME = 256
SERVICE_NAME = "service.name"
INSTANCE_ID = "service.instance.id"
NO_RECORDED_VALUE = 1  # DataPointFlags: a staleness marker, no value

# Plain ints: msgspec encodes no Django choices enum.
GAUGE, SUM, HISTOGRAM = (int(k) for k in MetricSeries.Kind)
_KINDS = {"gauge": GAUGE, "sum": SUM, "histogram": HISTOGRAM}

# Attributes in a fixed order, so one series hashes the same whatever order it came in.
_canonical = msgspec.json.Encoder(order="sorted").encode


# (service, instance, name, kind, unit, monotonic, temporality): what a metric says
# about its series; with the serialized attributes of a point, its series.
Metric = tuple[str, str, str, int, str, bool, int]
SeriesRef = tuple[Metric, tuple[bytes, ...]]
# series, time_ns, start_ns, value, int_value, count, sum, min, max, bounds,
# bucket_counts, flags: the columns of MetricPoint, the series still a ref.
PointRow = tuple[
    SeriesRef, int, int, float | None, int | None, int | None, float | None, float | None,
    float | None, list[float] | None, list[int] | None, int,
]  # fmt: skip
_serialize = KeyValue.SerializeToString


@dataclass
class MappedMetrics:
    points: list[PointRow] = field(default_factory=list)
    # Each series of the points: the attributes of its first point as sent and its
    # resource as mapped, for the store to create the series it does not know.
    series: dict[SeriesRef, tuple[Any, dict[str, Any]]] = field(default_factory=dict)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_data_points(self) -> int:
        return sum(self.rejected.values())

    @property
    def error_message(self) -> str:
        return "; ".join(
            f"{n} data point(s): {reason}" for reason, n in sorted(self.rejected.items())
        )

    def attributes(self, refs: list[SeriesRef]) -> dict[SeriesRef, dict[str, Any]]:
        """These series' attributes as JSON values, each distinct set mapped once."""
        mapped: dict[tuple[bytes, ...], dict[str, Any]] = {}
        out = {}
        for ref in refs:
            pairs = self.series[ref][0]
            attributes = mapped.get(ref[1])
            if attributes is None:
                attributes = mapped[ref[1]] = attributes_of(pairs, Cut())
            out[ref] = attributes
        return out


def series_key(ref: SeriesRef, attributes: dict[str, Any]) -> str:
    """The series' identity hashed (its attributes in a fixed order, so one series
    hashes the same whatever order they came in). The migration that made series
    (rumserver 0012) copies this: keep them alike."""
    service, instance, name, kind, unit, monotonic, temporality = ref[0]
    identity = [service, instance, name, kind, unit, monotonic, temporality, attributes]
    return hashlib.blake2b(_canonical(identity), digest_size=16).hexdigest()


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
    """The request's point rows and series. A point costs a few field reads and a
    tuple here (a request may hold 50,000): everything a metric's points share is
    read once, a series' attributes are mapped only if the store does not know it.
    The same point twice in one request is one row in the database (its key)."""
    mapped = MappedMetrics()
    rows, series, rejected = mapped.points, mapped.series, mapped.rejected
    append = rows.append
    total = 0
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
                points = data.data_points
                if not points:
                    continue  # nothing to store or refuse
                total += len(points)
                if total > MAX_DATA_POINTS:
                    got = _count_points(request)
                    raise IngestError(
                        413, f"at most {MAX_DATA_POINTS} data points a request, got {got}"
                    )
                kind = _KINDS.get(data_kind)
                if kind is None:
                    rejected[f"{data_kind} is not stored"] += len(points)
                    continue
                name = metric.name
                if not name or len(name) > MAX_NAME or "\x00" in name:
                    reason = f"metric name missing or longer than {MAX_NAME} characters"
                    rejected[reason] += len(points)
                    continue
                unit = metric.unit
                if unit:
                    unit = text_of(unit, cut, 64)
                if kind == GAUGE:
                    about: Metric = (service, instance, name, GAUGE, unit, False, 0)
                else:
                    temporality = data.aggregation_temporality
                    about = (
                        service, instance, name, kind, unit, kind == SUM and data.is_monotonic,
                        temporality if temporality in (1, 2) else 0,
                    )  # fmt: skip
                if kind == HISTOGRAM:
                    for point in points:
                        row, reason = _histogram(point, about)
                        if row is None:
                            rejected[reason] += 1
                        else:
                            append(row)
                            if row[0] not in series:
                                series[row[0]] = (point.attributes, resource)
                    continue
                for point in points:
                    time_ns, start_ns = point.time_unix_nano, point.start_time_unix_nano
                    if not 0 < time_ns <= MAX_INT64:
                        rejected["missing or out-of-range time"] += 1
                        continue
                    if start_ns > time_ns:
                        rejected[_start_after(start_ns)] += 1
                        continue
                    pairs = point.attributes
                    ref: SeriesRef = (about, tuple(map(_serialize, pairs)))
                    if ref not in series:
                        series[ref] = (pairs, resource)
                    flags = point.flags & 0xFFFF  # the defined ones; the column is int32
                    value_kind = point.WhichOneof("value")
                    if value_kind == "as_double":
                        append((ref, time_ns, start_ns, point.as_double, None,
                                None, None, None, None, None, None, flags))  # fmt: skip
                    elif value_kind == "as_int":
                        number = point.as_int
                        append((ref, time_ns, start_ns, float(number), number,
                                None, None, None, None, None, None, flags))  # fmt: skip
                    elif flags & NO_RECORDED_VALUE:
                        append((ref, time_ns, start_ns, None, None,
                                None, None, None, None, None, None, flags))  # fmt: skip
                    else:
                        rejected["no value (as_double or as_int)"] += 1
    return mapped


def _start_after(start_ns: int) -> str:
    if start_ns > MAX_INT64:
        return "missing or out-of-range time"
    return "time_order: start time after the point's time"


def _histogram(point: Any, about: Metric) -> tuple[PointRow | None, str]:
    time_ns, start_ns = point.time_unix_nano, point.start_time_unix_nano
    if not 0 < time_ns <= MAX_INT64:
        return None, "missing or out-of-range time"
    if start_ns > time_ns:
        return None, _start_after(start_ns)
    bounds, counts = list(point.explicit_bounds), list(point.bucket_counts)
    if len(counts) > MAX_BUCKETS:
        return None, f"more than {MAX_BUCKETS} histogram buckets"
    if counts and len(counts) != len(bounds) + 1:
        return None, "histogram needs one bucket count more than explicit bounds"
    if not counts and bounds:
        return None, "histogram has explicit bounds but no bucket counts"
    # Increasing (NaN compares false) with finite ends: all finite.
    if bounds and not (
        math.isfinite(bounds[0])
        and math.isfinite(bounds[-1])
        and all(map(operator.lt, bounds, islice(bounds, 1, None)))
    ):
        return None, "histogram bounds must be finite and increasing"
    if point.count > MAX_INT64 or (counts and max(counts) > MAX_INT64):
        return None, "histogram count out of range"
    ref: SeriesRef = (about, tuple(map(_serialize, point.attributes)))
    total = point.sum if point.HasField("sum") else None
    low = point.min if point.HasField("min") else None
    high = point.max if point.HasField("max") else None
    flags = point.flags & 0xFFFF
    row = (ref, time_ns, start_ns, None, None, point.count, total, low, high, bounds, counts, flags)
    return row, ""
