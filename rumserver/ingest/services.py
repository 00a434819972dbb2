"""Ingest services: the one call each ingest view makes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import transaction
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from rumserver.applications import IngestApp
from rumserver.ingest.beacon.parse import parse_batch
from rumserver.ingest.beacon.store import SessionRow, store_batch
from rumserver.ingest.beacon.useragent import parse_user_agent
from rumserver.ingest.hints import hints
from rumserver.ingest.otlp.metric_store import SERIES_IDS, store_metric_points
from rumserver.ingest.otlp.metrics import map_metrics
from rumserver.ingest.otlp.spans import map_request, mark_source
from rumserver.ingest.otlp.store import store_spans
from rumserver.ingest.otlp.wire import decode_export, decode_request
from rumserver.ingest.text import storable_text


@dataclass(frozen=True)
class BeaconResult:
    accepted: int
    rejected: list[dict[str, Any]]
    dropped_by_sdk: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "rejected": self.rejected}


def beacon_ingest(
    *,
    app: IngestApp,
    body: bytes,
    user_agent: str,
    client_ip: str | None,
    now: datetime,
) -> BeaconResult:
    """Validate a beacon batch and store it (session, events and dirty traces,
    all or nothing), then, once committed, nudge the correlator."""
    parsed = parse_batch(body, max_events=settings.LLMRUM_BEACON_MAX_EVENTS)
    if parsed.rows:
        batch = parsed.batch
        ua_text = user_agent[:512]
        session = SessionRow(
            session_id=batch.session.id,
            started_at_ms=batch.session.started_at,
            user_id=storable_text(batch.user.id, 128)[0] if batch.user else "",
            sdk_version=storable_text(batch.sdk.version, 32)[0],
            user_agent=ua_text,
            agent=parse_user_agent(ua_text),
            client_ip=client_ip if settings.LLMRUM_STORE_CLIENT_IP else None,
        )
        store_batch(app_id=app.id, session=session, parsed=parsed, now=now)
        if parsed.trace_ids:
            # Runs at once after an autocommit write, or when the caller's transaction commits.
            transaction.on_commit(hints.nudge)
    return BeaconResult(
        accepted=len(parsed.rows), rejected=parsed.rejected, dropped_by_sdk=parsed.batch.dropped
    )


@dataclass(frozen=True)
class OtlpResult:
    accepted_spans: int
    rejected_spans: int
    error_message: str


def otlp_ingest(
    *, app: IngestApp, body: bytes, media_type: str, now: datetime, source: str = ""
) -> OtlpResult:
    """Decode an OTLP/HTTP traces request and store its spans in bulk (all or
    nothing), then, once committed, nudge the correlator. Spans that cannot be
    stored (bad ids or times) are counted for OTLP's partial success. ``source``
    (``browser-otlp`` for a browser exporter) is stamped on every span and keeps it
    out of the server roles, which the stitch decides (rumserver.roles)."""
    request = decode_request(body, media_type)
    mapped = map_request(
        request, keep_content=app.store_content, max_spans=settings.LLMRUM_OTLP_MAX_SPANS
    )
    if source:
        mark_source(mapped.rows, source)
    store_spans(app_id=app.id, rows=mapped.rows, trace_ids=mapped.trace_ids, now=now)
    if mapped.rows:
        transaction.on_commit(hints.nudge)
    return OtlpResult(
        accepted_spans=len(mapped.rows),
        rejected_spans=mapped.rejected_spans,
        error_message=mapped.error_message,
    )


@dataclass(frozen=True)
class OtlpMetricsResult:
    accepted_data_points: int
    rejected_data_points: int
    error_message: str


def otlp_metrics_ingest(
    *, app: IngestApp, body: bytes, media_type: str, now: datetime
) -> OtlpMetricsResult:
    """Decode an OTLP/HTTP metrics request and store its gauge, sum and histogram
    points in bulk (all or nothing). Points that cannot be stored (bad times or
    buckets, kinds not kept) are counted for OTLP's partial success."""
    request = decode_export(body, media_type, ExportMetricsServiceRequest)
    mapped = map_metrics(request, SERIES_IDS.of(app.id))
    store_metric_points(app_id=app.id, mapped=mapped, now=now)
    return OtlpMetricsResult(
        accepted_data_points=mapped.accepted_data_points,
        rejected_data_points=mapped.rejected_data_points,
        error_message=mapped.error_message,
    )
