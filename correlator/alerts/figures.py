"""The figures a rule may watch: the numeric fields of ``GET /api/v1/metrics``'s answer,
as dotted paths (``client_ttft_ms.p95``, ``rates.error_rate``), read off the answer's
own documented serializer so that a figure added there can be watched at once."""

from __future__ import annotations

from functools import cache
from typing import Any

from rest_framework import serializers


@cache
def figure_paths() -> tuple[str, ...]:
    """Every numeric leaf of the metrics answer, in the answer's order."""
    from correlator.api import MetricsFiguresOutput  # the API imports models; import late

    return tuple(_numeric_paths(MetricsFiguresOutput(), prefix=""))


def _numeric_paths(serializer: serializers.Serializer[Any], *, prefix: str) -> list[str]:
    paths = []
    for name, field in serializer.fields.items():
        if isinstance(field, serializers.Serializer):
            paths += _numeric_paths(field, prefix=f"{prefix}{name}.")
        elif isinstance(field, serializers.IntegerField | serializers.FloatField):
            paths.append(prefix + name)
    return paths


def figure_value(answer: dict[str, Any], path: str) -> float | None:
    """The figure at ``path`` of a metrics answer; None when the window has none (a
    percentile of no turns)."""
    value: Any = answer
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, int | float) else None
