"""From a decoded ``ExportMetricsServiceRequest`` to the rows of the metric store,
without the database.

Gauges, sums and histograms are kept, every name (vLLM's, DCGM's, anyone's) alike.
Each data point is checked on its own: a point with a bad time or malformed buckets,
or of a kind not stored (exponential histogram, summary), is refused alone and counted
for OTLP's partial success. The message is walked once: a point is packed straight
into its row of the store's COPY (``point_rows``), its series id taken from what
this process knows (``SeriesIds``: by the metric, then the raw bytes of the point's
attributes), so a point costs a few attribute reads and one ``struct`` call. A point
of a series not known yet waits with its row and the series' description; the store
makes those series and fills their ids in. ``series_key`` hashes a series' identity.
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
from rumserver.ingest.otlp import point_rows
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
_json = msgspec.json.Encoder().encode


# (service, instance, name, kind, unit, monotonic, temporality): what a metric says
# about its series; with the serialized attributes of a point, its series.
Metric = tuple[str, str, str, int, str, bool, int]
Attributes = tuple[bytes, ...]
SeriesRef = tuple[Metric, Attributes]
# Series ids this process knows for one application: by metric, then attributes.
KnownSeries = dict[Metric, dict[Attributes, int]]
_serialize = KeyValue.SerializeToString
_NONE: dict[Attributes, int] = {}


@dataclass
class NewSeries:
    """A series the store does not know yet: its metric and attributes as sent by its
    first point, and its resource as mapped."""

    metric: Metric
    attributes: Attributes
    pairs: Any
    resource: dict[str, Any]

    @property
    def ref(self) -> SeriesRef:
        return (self.metric, self.attributes)


@dataclass
class MappedMetrics:
    # The points of known series, as rows of the store's COPY (point_rows).
    rows: list[bytes] = field(default_factory=list)
    # The points of new series: the series' index in ``new_series`` and the row,
    # its series id still 0.
    pending: list[tuple[int, bytes]] = field(default_factory=list)
    new_series: list[NewSeries] = field(default_factory=list)
    times: set[int] = field(default_factory=set)  # the points' distinct times
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def accepted_data_points(self) -> int:
        return len(self.rows) + len(self.pending)

    @property
    def rejected_data_points(self) -> int:
        return sum(self.rejected.values())

    @property
    def error_message(self) -> str:
        return "; ".join(
            f"{n} data point(s): {reason}" for reason, n in sorted(self.rejected.items())
        )

    def attributes(self) -> list[dict[str, Any]]:
        """The new series' attributes as JSON values, each distinct set mapped once."""
        mapped: dict[Attributes, dict[str, Any]] = {}
        out = []
        for series in self.new_series:
            attributes = mapped.get(series.attributes)
            if attributes is None:
                attributes = mapped[series.attributes] = attributes_of(series.pairs, Cut())
            out.append(attributes)
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


class _Points:
    """Where the points of one request go: a row to ``rows`` when the series is
    known, else to ``pending`` with its new series (one index per series a request)."""

    def __init__(self, mapped: MappedMetrics, known: KnownSeries) -> None:
        self.mapped, self.known = mapped, known
        self.fresh: dict[SeriesRef, int] = {}

    def pend(self, metric: Metric, attributes: Attributes, pairs: Any, resource: Any) -> int:
        ref = (metric, attributes)
        index = self.fresh.get(ref)
        if index is None:
            index = self.fresh[ref] = len(self.mapped.new_series)
            self.mapped.new_series.append(NewSeries(metric, attributes, pairs, resource))
        return index


def map_metrics(request: ExportMetricsServiceRequest, known: KnownSeries) -> MappedMetrics:
    """The request's point rows, with the ids of the series in ``known`` and the
    series not in it. Everything a metric's points share is read once; a request may
    hold 50,000 points. The same point twice in one request is one row in the
    database (its key)."""
    mapped = MappedMetrics()
    sink = _Points(mapped, known)
    rows, pending, times, rejected = mapped.rows, mapped.pending, mapped.times, mapped.rejected
    append = rows.append
    double_row, int_row = point_rows.double_row, point_rows.int_row
    total = 0
    last_time = 0
    cut = Cut()  # what limits took (a unit's length): not stored for metrics
    for resource_metrics in request.resource_metrics:
        service, instance, resource = _resource(resource_metrics.resource)
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
                ids = known.get(about, _NONE)
                if kind == HISTOGRAM:
                    for point in points:
                        row, reason = _histogram(point, ids, sink, about, resource)
                        if row is None:
                            rejected[reason] += 1
                    continue
                for point in points:
                    time_ns, start_ns = point.time_unix_nano, point.start_time_unix_nano
                    if not 0 < time_ns <= MAX_INT64:
                        rejected["missing or out-of-range time"] += 1
                        continue
                    if start_ns > time_ns:
                        rejected[_start_after(start_ns)] += 1
                        continue
                    flags = point.flags & 0xFFFF  # the defined ones; the column is int32
                    value_kind = point.WhichOneof("value")
                    pairs = point.attributes
                    attributes = tuple(map(_serialize, pairs))
                    series_id = ids.get(attributes, 0)
                    if value_kind == "as_double":
                        row = double_row(time_ns, series_id, start_ns, point.as_double, flags)
                    elif value_kind == "as_int":
                        row = int_row(time_ns, series_id, start_ns, point.as_int, flags)
                    elif flags & NO_RECORDED_VALUE:
                        row = point_rows.no_value_row(time_ns, series_id, start_ns, flags)
                    else:
                        rejected["no value (as_double or as_int)"] += 1
                        continue
                    if series_id:
                        append(row)
                    else:
                        pending.append((sink.pend(about, attributes, pairs, resource), row))
                    if time_ns != last_time:  # a batch's points mostly share their time
                        times.add(time_ns)
                        last_time = time_ns
    return mapped


# Resources as mapped, by their bytes: a Collector sends the same few again and again.
_RESOURCES: dict[bytes, tuple[str, str, dict[str, Any]]] = {}
_MAX_RESOURCES = 10_000


def _resource(resource: Any) -> tuple[str, str, dict[str, Any]]:
    """The service, instance and other attributes of a resource (the dict is shared:
    never change it)."""
    raw = resource.SerializeToString()
    known = _RESOURCES.get(raw)
    if known is not None:
        return known
    attributes = attributes_of(resource.attributes, Cut())
    service = str(attributes.pop(SERVICE_NAME, "") or "unknown_service")[:128]
    instance = str(attributes.pop(INSTANCE_ID, ""))[:256]
    if len(_RESOURCES) >= _MAX_RESOURCES:
        _RESOURCES.clear()
    known = _RESOURCES[raw] = (service, instance, attributes)
    return known


def _start_after(start_ns: int) -> str:
    if start_ns > MAX_INT64:
        return "missing or out-of-range time"
    return "time_order: start time after the point's time"


def _histogram(
    point: Any, ids: dict[Attributes, int], sink: _Points, about: Metric, resource: Any
) -> tuple[bytes | None, str]:
    """The point's row, kept in ``sink``; or None and why it was refused."""
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
    pairs = point.attributes
    attributes = tuple(map(_serialize, pairs))
    series_id = ids.get(attributes, 0)
    row = point_rows.histogram_row(
        time_ns, series_id, start_ns, point.count,
        point.sum if point.HasField("sum") else None,
        point.min if point.HasField("min") else None,
        point.max if point.HasField("max") else None,
        point_rows.jsonb(_json(bounds)), point_rows.jsonb(_json(counts)),
        point.flags & 0xFFFF,
    )  # fmt: skip
    if series_id:
        sink.mapped.rows.append(row)
    else:
        sink.mapped.pending.append((sink.pend(about, attributes, pairs, resource), row))
    sink.mapped.times.add(time_ns)
    return row, ""
