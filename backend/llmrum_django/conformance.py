"""``POST /_w3c/tracecontext``: the W3C trace-context test harness protocol
(STANDARDS.md §1.9), served through the helper's propagation. Test-only: mount it
only when asked (llmrum: ``LLMRUM_TRACECONTEXT_TEST_ENDPOINT=1``).

The body is a JSON array of ``{"url": ..., "arguments": ...}``. For each item, in
order and before answering, the view POSTs ``json.dumps(arguments)`` to ``url``
with the ``traceparent``/``tracestate`` it propagates: same trace id, a new
parent-id per callback (each callback is its own CLIENT span), a fresh trace when
the input is invalid. Then it answers 200 (502 naming the callbacks that failed).

It makes the server POST to URLs a client names, so it only talks to loopback: the
caller must be on loopback, callback URLs must be ``http://`` to a loopback address
or ``localhost``, redirects are not followed and proxies are not used.

Span ids: with an OpenTelemetry SDK configured, the spans are real SDK spans. With
``opentelemetry-api`` alone the API's tracer makes no new ids, so the view mints
random ids itself (§1.7), keeping the caller's trace id and flags.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import logging
import random
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST
from opentelemetry import trace
from opentelemetry.trace import SpanContext, SpanKind, TraceFlags

from llmrum_django.propagation import KNOWN_FLAGS, outgoing_headers, request_context

logger = logging.getLogger(__name__)

MAX_CALLBACKS = 64
CALLBACK_TIMEOUT_SECONDS = 5.0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # a redirect could lead off loopback


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


@csrf_exempt
@require_POST
def tracecontext(request: HttpRequest) -> HttpResponse:
    if not _is_loopback(request.META.get("REMOTE_ADDR", "")):
        return JsonResponse(
            {"error": "the trace-context test endpoint answers loopback only"}, status=403
        )
    try:
        callbacks = parse_callbacks(request.body)
    except ValueError as error:
        return JsonResponse({"error": str(error)}, status=400)
    failures = []
    with request_context(request):
        current = trace.get_current_span().get_span_context()
        # The request's own server span, unless instrumentation already made one.
        own_span = not current.is_valid or current.is_remote
        with _span("POST /_w3c/tracecontext", SpanKind.SERVER) if own_span else nullcontext():
            for url, arguments in callbacks:
                with _span("POST", SpanKind.CLIENT):
                    failure = _post(url, arguments, outgoing_headers())
                if failure:
                    failures.append(failure)
    if failures:
        return JsonResponse({"error": "callbacks failed", "callbacks": failures}, status=502)
    return HttpResponse(status=200)


def parse_callbacks(body: bytes) -> list[tuple[str, Any]]:
    try:
        items = json.loads(body)
    except (ValueError, RecursionError):
        raise ValueError("the body must be JSON") from None
    if not isinstance(items, list) or len(items) > MAX_CALLBACKS:
        raise ValueError(f"the body must be a JSON array of at most {MAX_CALLBACKS} items")
    callbacks = []
    for index, item in enumerate(items):
        url = item.get("url") if isinstance(item, dict) else None
        if not isinstance(url, str) or not _is_loopback_url(url):
            raise ValueError(f"item {index}: url must be an http:// URL on a loopback address")
        callbacks.append((url, item.get("arguments", [])))
    return callbacks


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _is_loopback_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        return False
    return parts.scheme == "http" and _is_loopback(parts.hostname or "")


def _post(url: str, arguments: Any, headers: dict[str, str]) -> str | None:
    request = urllib.request.Request(
        url,
        data=json.dumps(arguments).encode(),
        method="POST",
        headers={"Content-Type": "application/json", **headers},
    )
    try:
        with _OPENER.open(request, timeout=CALLBACK_TIMEOUT_SECONDS) as response:
            response.read()
    except (OSError, http.client.HTTPException) as error:
        logger.warning("tracecontext callback %s failed: %s", url, error)
        return f"{url}: {error}"
    return None


@contextmanager
def _span(name: str, kind: SpanKind) -> Iterator[None]:
    """A span from the configured tracer; minted ids when the tracer makes none."""
    parent = trace.get_current_span().get_span_context()
    with _tracer().start_as_current_span(name, kind=kind) as span:
        made = span.get_span_context()
        if made.is_valid and made.span_id != parent.span_id:
            yield
            return
    # The API's no-op tracer hands back the parent's ids (or none): every callback would
    # then carry the caller's parent-id unchanged, like a pure proxy.
    with trace.use_span(trace.NonRecordingSpan(_minted_child(parent))):
        yield


def _tracer() -> trace.Tracer:
    return trace.get_tracer("llmrum_django.conformance")


def _minted_child(parent: SpanContext) -> SpanContext:
    if parent.is_valid:
        return SpanContext(
            trace_id=parent.trace_id,
            span_id=_random_id(64),
            is_remote=False,
            trace_flags=TraceFlags(parent.trace_flags & KNOWN_FLAGS),
            trace_state=parent.trace_state,
        )
    # A new trace with a random id, so the random-trace-id flag is set (§1.7); not
    # sampled, since nothing here is recorded.
    return SpanContext(
        trace_id=_random_id(128),
        span_id=_random_id(64),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.RANDOM_TRACE_ID),
    )


def _random_id(bits: int) -> int:
    # Ids need uniqueness and uniform randomness, not secrecy (the SDK uses the same).
    while True:
        value = random.getrandbits(bits)
        if value:
            return value
