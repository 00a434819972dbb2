"""Per-application CORS for the browser-facing ingest endpoints.

django-cors-headers asks ``check_request_enabled`` whether a cross-origin
request may proceed; we answer from the application named by the public key
(``?key=``, or the ``x-llmrum-key`` header a browser OpenTelemetry exporter can send).

A preflight cannot carry a header's value, only its name, so a preflight to
``/v1/traces`` without ``?key=`` is allowed for any origin: it grants nothing by
itself, and the POST that follows is checked against its key's application (403,
and no CORS headers, from an origin outside the list).
"""

from __future__ import annotations

from typing import Any

from corsheaders.middleware import CorsMiddleware
from corsheaders.signals import check_request_enabled
from django.db import DatabaseError
from django.http import HttpRequest

from rumserver.applications import ingest_app_by_public_key

BROWSER_INGEST_PATHS = ("/rum/v1/", "/v1/traces")


def _is_preflight(request: HttpRequest) -> bool:
    return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers


def beacon_origin_allowed(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    if not request.path.startswith(BROWSER_INGEST_PATHS):
        return False
    origin = request.headers.get("Origin", "")
    key = request.GET.get("key", "") or request.headers.get("X-Llmrum-Key", "")
    if origin and not key and request.path == "/v1/traces" and _is_preflight(request):
        return True
    if not origin or not key or len(key) > 64:
        return False
    try:
        app = ingest_app_by_public_key(key)
    except DatabaseError:
        # The view answers 503 for this request; the middleware must not turn it into a 500.
        return False
    return app is not None and app.origin_allowed(origin)


check_request_enabled.connect(beacon_origin_allowed, dispatch_uid="llmrum_beacon_cors")


class BrowserIngestCorsMiddleware(CorsMiddleware):
    """django-cors-headers' middleware, run as sync code under ASGI too: the signal
    above looks the application up in the database, which Django refuses from the
    event loop. Declared sync-only, Django runs it in its sync thread."""

    async_capable = False
