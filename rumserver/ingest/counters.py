"""What ingest counts for ``GET /metrics`` (``rumserver.ops.prometheus``): requests and
their items by answer. A few dict lookups a request, no I/O beyond prometheus-client's
mmap'd files."""

from __future__ import annotations

from prometheus_client import Counter

BEACONS = Counter("llmrum_beacon_requests", "Beacon requests by answer.", ["outcome", "reason"])
BEACON_EVENTS = Counter("llmrum_beacon_events", "Beacon events by result.", ["outcome", "reason"])
OTLP_REQUESTS = Counter(
    "llmrum_otlp_requests", "OTLP/HTTP requests by answer.", ["outcome", "reason"]
)
SPANS = Counter("llmrum_spans", "OTLP spans by result.", ["outcome", "reason"])
OTLP_METRIC_REQUESTS = Counter(
    "llmrum_otlp_metric_requests", "OTLP/HTTP metrics requests by answer.", ["outcome", "reason"]
)
METRIC_POINTS = Counter(
    "llmrum_metric_points", "OTLP metric data points by result.", ["outcome", "reason"]
)
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
