"""CORS for the chat endpoints, so the browser may send ``traceparent``,
``tracestate`` and ``baggage`` cross-origin and read ``Server-Timing`` back
(STANDARDS.md §6.2, §6.3, §6.6).

Adding any of those headers to a cross-origin ``fetch`` makes the browser send an
OPTIONS preflight first; if the preflight is not allowed, the chat request itself
fails. Only origins in the allow-list get CORS headers; anything else gets none and
the browser blocks the request, as it would without this helper.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers

from llmrum_django.conf import HelperSettings


class CorsPolicy:
    def __init__(self, config: HelperSettings) -> None:
        self.config = config

    def applies(self, request: HttpRequest) -> bool:
        return bool(self.config.cors_allowed_origins) and bool(
            self.config.cors_urls.match(request.path_info)
        )

    def allowed_origin(self, request: HttpRequest) -> str | None:
        origin = request.headers.get("Origin")
        return origin if origin in self.config.cors_allowed_origins else None

    @staticmethod
    def is_preflight(request: HttpRequest) -> bool:
        return request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers

    def preflight_response(self, request: HttpRequest) -> HttpResponse:
        """Answer the preflight here, before CSRF, APPEND_SLASH redirects or the view
        can turn it into something the browser rejects. The allowed lists do not depend
        on what was requested, so the answer varies by Origin only."""
        response = HttpResponse(status=204)
        del response["Content-Type"]  # no body
        origin = self.allowed_origin(request)
        if origin is not None:
            config = self.config
            self._allow(response, origin)
            response["Access-Control-Allow-Methods"] = ", ".join(config.cors_allow_methods)
            response["Access-Control-Allow-Headers"] = ", ".join(config.cors_allow_headers)
            response["Access-Control-Max-Age"] = str(config.cors_max_age)
        patch_vary_headers(response, ("Origin",))
        return response

    def decorate(self, request: HttpRequest, response: HttpResponseBase) -> None:
        """Headers for the actual (non-preflight) response."""
        origin = self.allowed_origin(request)
        if origin is not None:
            self._allow(response, origin)
            response["Access-Control-Expose-Headers"] = _merge(
                response.get("Access-Control-Expose-Headers"), self.config.cors_expose_headers
            )
            # Without it, Resource Timing hides serverTiming and the network phases
            # from the page for this cross-origin response (STANDARDS.md §6.2).
            response["Timing-Allow-Origin"] = origin
        patch_vary_headers(response, ("Origin",))

    def _allow(self, response: HttpResponseBase, origin: str) -> None:
        # The exact origin, never "*": the chat app may send credentials.
        response["Access-Control-Allow-Origin"] = origin
        if self.config.cors_allow_credentials:
            response["Access-Control-Allow-Credentials"] = "true"


def _merge(existing: str | None, names: tuple[str, ...]) -> str:
    present = [n.strip() for n in (existing or "").split(",") if n.strip()]
    lowered = {n.lower() for n in present}
    return ", ".join([*present, *(n for n in names if n.lower() not in lowered)])
