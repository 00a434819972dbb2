"""Stored metric points with their series' fields, as one object each: a point is a
thin row of its series (rumserver.models.MetricPoint, MetricSeries)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from rumserver.models import MetricPoint

SERIES_FIELDS = ("app", "app_id", "key", "service", "instance", "name", "unit", "kind",
                 "monotonic", "temporality", "attributes", "resource")  # fmt: skip
POINT_FIELDS = ("series_id", "time_ns", "start_ns", "value", "int_value", "count", "sum",
                "min", "max", "bounds", "bucket_counts", "flags")  # fmt: skip


def lookups(filters: dict[str, Any]) -> dict[str, Any]:
    """Filters on either the point or its series, as point lookups."""
    return {
        (f"series__{key}" if key.split("__")[0] in SERIES_FIELDS else key): value
        for key, value in filters.items()
    }


def stored_points(**filters: Any) -> list[SimpleNamespace]:
    points = MetricPoint.objects.filter(**lookups(filters)).select_related("series")
    return [
        SimpleNamespace(
            **{name: getattr(p.series, name) for name in SERIES_FIELDS if name != "app"},
            **{name: getattr(p, name) for name in POINT_FIELDS},
        )
        for p in points.order_by("series_id", "time_ns")
    ]


def stored_point(**filters: Any) -> SimpleNamespace:
    (point,) = stored_points(**filters)
    return point
