"""A Content-Security-Policy on every HTML page llmrum serves (report pages, admin,
login): scripts and styles from llmrum's own origin only, so a value that came from
a browser or a span can never run even if a template forgot to escape it.

A view that needs another policy (the demo chat page) sets its own header; this
middleware leaves a response that already has one alone.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        content_type = response.get("Content-Type", "")
        if content_type.startswith("text/html") and "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = POLICY
        return response
