"""Per-application CORS for the beacon endpoint.

django-cors-headers asks ``check_request_enabled`` whether a cross-origin
request may proceed; we answer from the application named by ``?key=``.
"""

from __future__ import annotations

from typing import Any

from corsheaders.signals import check_request_enabled
from django.db import DatabaseError
from django.http import HttpRequest

from rumserver.applications import ingest_app_by_public_key


def beacon_origin_allowed(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    if not request.path.startswith("/rum/v1/"):
        return False
    origin = request.headers.get("Origin", "")
    key = request.GET.get("key", "")
    if not origin or not key or len(key) > 64:
        return False
    try:
        app = ingest_app_by_public_key(key)
    except DatabaseError:
        # The view answers 503 for this request; the middleware must not turn it into a 500.
        return False
    return app is not None and app.origin_allowed(origin)


check_request_enabled.connect(beacon_origin_allowed, dispatch_uid="llmrum_beacon_cors")
