"""The CORS rules of llmrum_backend.cors on Django requests and responses."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.cache import patch_vary_headers

from llmrum_backend.cors import CorsRules
from llmrum_backend.options import HelperOptions


class CorsPolicy:
    def __init__(self, options: HelperOptions) -> None:
        self.rules = CorsRules(options)

    def applies(self, request: HttpRequest) -> bool:
        return self.rules.applies(request.path_info)

    def is_preflight(self, request: HttpRequest) -> bool:
        return self.rules.is_preflight(
            request.method or "", "Access-Control-Request-Method" in request.headers
        )

    def preflight_response(self, request: HttpRequest) -> HttpResponse:
        """Answer the preflight here, before CSRF, APPEND_SLASH redirects or the view
        can turn it into something the browser rejects."""
        response = HttpResponse(status=204)
        del response["Content-Type"]  # no body
        for name, value in self.rules.preflight_headers(request.headers.get("Origin")):
            response[name] = value
        patch_vary_headers(response, ("Origin",))
        return response

    def decorate(self, request: HttpRequest, response: HttpResponseBase) -> None:
        """Headers for the actual (non-preflight) response."""
        headers = self.rules.response_headers(
            request.headers.get("Origin"), response.get("Access-Control-Expose-Headers")
        )
        for name, value in headers:
            response[name] = value
        patch_vary_headers(response, ("Origin",))
