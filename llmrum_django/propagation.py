"""W3C trace context in and out of a Django request, through OpenTelemetry's
global propagator (``tracecontext`` + ``baggage`` unless ``OTEL_PROPAGATORS`` says
otherwise).

Validation is OpenTelemetry's (STANDARDS.md §1.9): an invalid ``traceparent``
restarts the trace and drops ``tracestate``; ``tracestate`` keys follow the Level 1
grammar and a malformed or duplicated member drops the whole ``tracestate``, which
§1.6 allows. The random-trace-id flag (Level 2) is carried unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from django.http import HttpRequest
from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanContext

logger = logging.getLogger(__name__)

# Sampled and random-trace-id; every other bit is reserved and sent as 0 (§1.4).
KNOWN_FLAGS = 0x03
# The baggage member the llmrum snippet sends, copied onto the server span (STANDARDS.md §2).
SESSION_BAGGAGE_KEY = "session.id"
_MAX_SESSION_ID = 256


class _RequestHeaders(Getter[HttpRequest]):
    """Reads headers case-insensitively. WSGI servers join a repeated header with
    ``,``: right for ``tracestate`` and ``baggage`` (list headers), and it makes two
    ``traceparent`` headers one invalid value, so the trace restarts as §1.2 wants."""

    def get(self, carrier: HttpRequest, key: str) -> list[str] | None:
        value = carrier.headers.get(key)
        return None if value is None else [value]

    def keys(self, carrier: HttpRequest) -> list[str]:
        return [name.lower() for name in carrier.headers]


_GETTER = _RequestHeaders()


def extract_request_context(request: HttpRequest) -> Context:
    """The caller's trace context and baggage; an empty context when there is none
    or the headers are bad. Never raises: a request must not fail over a header."""
    try:
        return propagate.extract(request, getter=_GETTER)
    except Exception:
        logger.warning("llmrum_django: could not read the trace headers", exc_info=True)
        return Context()


@contextmanager
def request_context(request: HttpRequest) -> Iterator[SpanContext]:
    """Run the body in the caller's trace. Yields the span context the request runs
    under: the instrumentation's server span when there is one, else the caller's
    (remote) span context, else an invalid one."""
    current = trace.get_current_span()
    if current.get_span_context().is_valid:
        # An outer layer already continued the trace: opentelemetry-instrumentation-django
        # puts its middleware first, extracts the same headers and starts the server span.
        # Attaching the raw remote context again would make the app's spans children of
        # the browser's span instead of the server span.
        _stamp_session(current, otel_context.get_current())
        yield current.get_span_context()
        return
    ctx = extract_request_context(request)
    token = otel_context.attach(ctx)
    try:
        yield trace.get_current_span(ctx).get_span_context()
    finally:
        otel_context.detach(token)


def outgoing_headers(context: Context | None = None) -> dict[str, str]:
    """``traceparent``, ``tracestate`` and ``baggage`` for a call made from the
    current span (or ``context``). The caller's span must be the one making the call:
    to send a new parent-id, start a CLIENT span first (HTTP client instrumentation
    does)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier


def format_traceparent(span_context: SpanContext) -> str:
    """Version 00 ``traceparent`` value, reserved flag bits cleared (§1.3, §1.4)."""
    trace_id = trace.format_trace_id(span_context.trace_id)
    span_id = trace.format_span_id(span_context.span_id)
    return f"00-{trace_id}-{span_id}-{span_context.trace_flags & KNOWN_FLAGS:02x}"


def _stamp_session(span: trace.Span, ctx: Context) -> None:
    """Copy the chat session id from baggage onto the server span, where the
    correlator looks for it (STANDARDS.md §2)."""
    if not span.is_recording():
        return
    session_id = baggage.get_baggage(SESSION_BAGGAGE_KEY, ctx)
    if isinstance(session_id, str) and 0 < len(session_id) <= _MAX_SESSION_ID:
        span.set_attribute(SESSION_BAGGAGE_KEY, session_id)
