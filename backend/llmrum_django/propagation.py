"""W3C trace context in and out of a Django request (llmrum_backend.propagation on
``request.headers``, which reads names case-insensitively)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.http import HttpRequest
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from llmrum_backend.propagation import (
    SESSION_BAGGAGE_KEY,
    continued,
    extract_context,
    outgoing_headers,
)
from llmrum_backend.servertiming import KNOWN_FLAGS, format_traceparent

__all__ = [
    "KNOWN_FLAGS",
    "SESSION_BAGGAGE_KEY",
    "extract_request_context",
    "format_traceparent",
    "outgoing_headers",
    "request_context",
]


def extract_request_context(request: HttpRequest) -> Context:
    """The caller's trace context and baggage; an empty context when there is none
    or the headers are bad. Never raises."""
    return extract_context(request.headers)


@contextmanager
def request_context(request: HttpRequest) -> Iterator[SpanContext]:
    """Run the body in the caller's trace; yields the span context the request runs
    under (llmrum_backend.propagation.continued)."""
    with continued(request.headers) as span_context:
        yield span_context
