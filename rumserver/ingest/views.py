"""Ingest views: parse the request, make one service call, answer."""

from __future__ import annotations

import msgspec
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt

from rumserver.applications import IngestApp, ingest_app_by_public_key, ingest_app_by_token
from rumserver.ingest import counters
from rumserver.ingest.client_address import client_address
from rumserver.ingest.errors import IngestError
from rumserver.ingest.otlp import wire as otlp_wire
from rumserver.ingest.parsers import media_type, read_body
from rumserver.ingest.ratelimit import Limit, buckets_for, retry_after_seconds
from rumserver.ingest.scores import score_record
from rumserver.ingest.services import beacon_ingest, otlp_ingest, otlp_metrics_ingest
from rumserver.roles import BROWSER_OTLP

BEACON_MEDIA_TYPES = ("application/json", "text/plain")
# Shared by every process through Redis when LLMRUM_CACHE_URL is set.
rate_limits = buckets_for(settings.LLMRUM_CACHE_URL)


def _with_headers(response: HttpResponse, error: IngestError) -> HttpResponse:
    """The headers of an error answer, whatever the format of its body."""
    if error.retry_after is not None:
        response["Retry-After"] = str(error.retry_after)
    if error.status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="llmrum"'
    if error.allow:
        response["Allow"] = error.allow
    return response


def error_response(error: IngestError) -> HttpResponse:
    return _with_headers(JsonResponse(error.as_json(), status=error.status), error)


def _public_key(request: HttpRequest) -> str:
    return request.GET.get("key", "") or request.headers.get("X-Llmrum-Key", "")


def _public_app(request: HttpRequest) -> IngestApp:
    """The application of a browser's public key, if the request's Origin is allowed."""
    key = _public_key(request)
    if not key:
        raise IngestError(403, "missing public key (?key=pk_...)", field="key")
    app = ingest_app_by_public_key(key) if len(key) <= 64 else None
    if app is None:
        raise IngestError(403, "unknown public key", field="key")
    # sendBeacon and fetch always send Origin on cross-origin POSTs; a request
    # without one (a server, curl) cannot be told apart and is let through.
    origin = request.headers.get("Origin")
    if origin is not None and not app.origin_allowed(origin):
        raise IngestError(403, f"origin {origin[:200]!r} is not allowed for this application")
    return app


def _rate_limit(*limits: Limit) -> None:
    wait = rate_limits.take(limits)
    if wait:
        raise IngestError(429, "too many requests", retry_after=retry_after_seconds(wait))


def _browser_rate_limit(app: IngestApp, client_ip: str) -> None:
    """The beacon limits: per application, and per client address within it."""
    rate, ip_rate = settings.LLMRUM_BEACON_RATE_LIMIT, settings.LLMRUM_BEACON_IP_RATE_LIMIT
    _rate_limit(
        Limit(f"app:{app.id}", rate=rate, burst=rate * 2),
        Limit(f"ip:{app.id}:{client_ip}", rate=ip_rate, burst=ip_rate * 2),
    )


@csrf_exempt
def beacon(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        # OPTIONS preflights for allowed origins are answered by the CORS middleware.
        return error_response(IngestError(405, "use POST", allow="POST, OPTIONS"))
    client_ip = client_address(request, settings.LLMRUM_TRUSTED_PROXIES)
    try:
        app = _public_app(request)
        _browser_rate_limit(app, client_ip)
        if media_type(request) not in BEACON_MEDIA_TYPES:
            raise IngestError(415, "Content-Type must be application/json or text/plain")
        body = read_body(
            request,
            max_wire=settings.LLMRUM_BEACON_MAX_WIRE_BYTES,
            max_body=settings.LLMRUM_BEACON_MAX_BODY_BYTES,
        )
        result = beacon_ingest(
            app=app,
            body=body,
            user_agent=request.headers.get("User-Agent", ""),
            client_ip=client_ip or None,
            now=timezone.now(),
        )
    except IngestError as error:
        counters.count_request(counters.BEACONS, error.status)
        return error_response(error)
    except DatabaseError:
        # Nothing was committed (one transaction); ask the SDK to retry the batch later.
        counters.count_request(counters.BEACONS, 503)
        return error_response(IngestError(503, "storage unavailable, retry later", retry_after=5))
    counters.count_request(counters.BEACONS, 202)
    counters.BEACON_EVENTS.labels("accepted", "ok").inc(result.accepted)
    if result.rejected:
        # Operators tell a browser clock or SDK bug (time_order) from malformed events.
        out_of_order = sum(str(r["error"]).startswith("time_order") for r in result.rejected)
        if out_of_order:
            counters.BEACON_EVENTS.labels("rejected", "time_order").inc(out_of_order)
        if len(result.rejected) > out_of_order:
            counters.BEACON_EVENTS.labels("rejected", "invalid_event").inc(
                len(result.rejected) - out_of_order
            )
    if result.dropped_by_sdk:
        counters.SDK_DROPPED.inc(result.dropped_by_sdk)
    return JsonResponse(result.as_json(), status=202)


# --- OTLP/HTTP traces (gateway, model servers, any OpenTelemetry SDK) -------------

_RPC_CODES = {
    400: otlp_wire.INVALID_ARGUMENT,
    401: otlp_wire.UNAUTHENTICATED,
    413: otlp_wire.RESOURCE_EXHAUSTED,
    415: otlp_wire.INVALID_ARGUMENT,
    429: otlp_wire.RESOURCE_EXHAUSTED,
    503: otlp_wire.UNAVAILABLE,
}


def _bearer_app(request: HttpRequest) -> IngestApp:
    """The application of ``Authorization: Bearer it_…``; 401 without a known token."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise IngestError(401, "missing ingest token: send Authorization: Bearer it_...")
    app = ingest_app_by_token(token) if len(token) <= 256 else None
    if app is None:
        raise IngestError(401, "unknown ingest token")
    return app


def _otlp_error(error: IngestError, media_type: str) -> HttpResponse:
    wire = otlp_wire.PROTOBUF if media_type == otlp_wire.PROTOBUF else otlp_wire.JSON
    body = otlp_wire.encode_status(
        wire, code=_RPC_CODES.get(error.status, otlp_wire.INVALID_ARGUMENT), message=error.message
    )
    return _with_headers(HttpResponse(body, status=error.status, content_type=wire), error)


def _otlp_body(request: HttpRequest, media: str) -> bytes:
    """An OTLP/HTTP request's body, inflated, within the OTLP limits (415, 400, 413)."""
    if media not in otlp_wire.MEDIA_TYPES:
        raise IngestError(415, "Content-Type must be application/x-protobuf or application/json")
    return read_body(
        request,
        max_wire=settings.LLMRUM_OTLP_MAX_WIRE_BYTES,
        max_body=settings.LLMRUM_OTLP_MAX_BODY_BYTES,
        allow_empty=True,  # an empty export request is zero bytes of protobuf
    )


@csrf_exempt
def otlp_traces(request: HttpRequest) -> HttpResponse:
    media = media_type(request)
    if request.method != "POST":
        # OPTIONS preflights from browser exporters are answered by the CORS middleware.
        return _otlp_error(IngestError(405, "use POST", allow="POST, OPTIONS"), media)
    source = ""
    try:
        if _public_key(request):
            # A browser OpenTelemetry exporter: the public key and the page's Origin,
            # the beacon's limits; its spans can never claim a server role.
            app = _public_app(request)
            _browser_rate_limit(app, client_address(request, settings.LLMRUM_TRUSTED_PROXIES))
            source = BROWSER_OTLP
        else:
            app = _bearer_app(request)
            rate = settings.LLMRUM_OTLP_RATE_LIMIT
            _rate_limit(Limit(f"otlp:{app.id}", rate=rate, burst=rate * 2))
        body = _otlp_body(request, media)
        result = otlp_ingest(
            app=app, body=body, media_type=media, now=timezone.now(), source=source
        )
    except IngestError as error:
        counters.count_request(counters.OTLP_REQUESTS, error.status)
        return _otlp_error(error, media)
    except DatabaseError:
        counters.count_request(counters.OTLP_REQUESTS, 503)
        return _otlp_error(
            IngestError(503, "storage unavailable, retry later", retry_after=5), media
        )
    counters.count_request(counters.OTLP_REQUESTS, 200)
    counters.SPANS.labels("accepted", "ok").inc(result.accepted_spans)
    if result.rejected_spans:
        counters.SPANS.labels("rejected", "invalid_span").inc(result.rejected_spans)
    payload = otlp_wire.encode_response(
        media, rejected_spans=result.rejected_spans, error_message=result.error_message
    )
    return HttpResponse(payload, status=200, content_type=media)


@csrf_exempt
def otlp_metrics(request: HttpRequest) -> HttpResponse:
    """OTLP/HTTP metrics (a Collector scraping vLLM and DCGM, any SDK's metric exporter):
    the Bearer ingest token and the answers of ``/v1/traces``."""
    media = media_type(request)
    if request.method != "POST":
        return _otlp_error(IngestError(405, "use POST", allow="POST"), media)
    try:
        app = _bearer_app(request)
        rate = settings.LLMRUM_OTLP_RATE_LIMIT
        # A bucket of its own: a Collector's metric batches never starve the traces.
        _rate_limit(Limit(f"otlp-metrics:{app.id}", rate=rate, burst=rate * 2))
        body = _otlp_body(request, media)
        result = otlp_metrics_ingest(app=app, body=body, media_type=media, now=timezone.now())
    except IngestError as error:
        counters.count_request(counters.OTLP_METRIC_REQUESTS, error.status)
        return _otlp_error(error, media)
    except DatabaseError:
        counters.count_request(counters.OTLP_METRIC_REQUESTS, 503)
        return _otlp_error(
            IngestError(503, "storage unavailable, retry later", retry_after=5), media
        )
    counters.count_request(counters.OTLP_METRIC_REQUESTS, 200)
    counters.METRIC_POINTS.labels("accepted", "ok").inc(result.accepted_data_points)
    if result.rejected_data_points:
        counters.METRIC_POINTS.labels("rejected", "invalid_point").inc(result.rejected_data_points)
    payload = otlp_wire.encode_metrics_response(
        media,
        rejected_data_points=result.rejected_data_points,
        error_message=result.error_message,
    )
    return HttpResponse(payload, status=200, content_type=media)


@csrf_exempt
def scores(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return error_response(IngestError(405, "use POST", allow="POST"))
    try:
        app = _bearer_app(request)
        if media_type(request) != "application/json":
            raise IngestError(415, "Content-Type must be application/json")
        body = read_body(request, max_wire=64 * 1024, max_body=64 * 1024)
        score = score_record(app=app, body=body, now=timezone.now())
    except IngestError as error:
        return error_response(error)
    except DatabaseError:
        return error_response(IngestError(503, "storage unavailable, retry later", retry_after=5))
    return JsonResponse(msgspec.to_builtins(score), status=201)
