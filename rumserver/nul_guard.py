"""Refuse a request whose path or query string carries a NUL character.

PostgreSQL text cannot hold NUL, so ``?app=%00`` reached a query as a DataError and
a 500 on every page that filters by a query value (report pages, admin search).
One check here answers all of them with a clear 400; bodies are each parser's job
(the beacon parser strips NUL from the strings it stores).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

MESSAGE = "NUL characters are not allowed in the URL"


class NulGuardMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        query = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "%00" in query or "\x00" in query:
            return HttpResponseBadRequest(MESSAGE, content_type="text/plain")
        return self.get_response(request)
