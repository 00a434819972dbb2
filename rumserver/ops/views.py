"""/healthz and /metrics: what load balancers and Prometheus ask of a node."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from rumserver.ops.health import health_check
from rumserver.ops.prometheus import metrics_text


def healthz(request: HttpRequest) -> HttpResponse:
    report = health_check()
    return JsonResponse(report.as_json(), status=200 if report.ok else 503)


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text for operators (optionally behind LLMRUM_METRICS_TOKEN)."""
    token = settings.LLMRUM_METRICS_TOKEN
    if token and request.headers.get("Authorization", "") != f"Bearer {token}":
        response = HttpResponse("unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="llmrum-metrics"'
        return response
    body = metrics_text(now=timezone.now())
    return HttpResponse(body, content_type="text/plain; version=0.0.4; charset=utf-8")
