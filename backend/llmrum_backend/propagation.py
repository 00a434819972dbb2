"""W3C trace context in and out of a request, through OpenTelemetry's global propagator
(``tracecontext`` + ``baggage`` unless ``OTEL_PROPAGATORS`` says otherwise).

Validation is OpenTelemetry's (STANDARDS.md §1.9): an invalid ``traceparent`` restarts
the trace and drops ``tracestate``; ``tracestate`` keys follow the Level 1 grammar and a
malformed or duplicated member drops the whole ``tracestate``, which §1.6 allows. The
random-trace-id flag (Level 2) is carried unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from opentelemetry import baggage, propagate, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanContext

logger = logging.getLogger(__name__)

# The baggage member the llmrum snippet sends, copied onto the server span (STANDARDS.md §2).
SESSION_BAGGAGE_KEY = "session.id"
_MAX_SESSION_ID = 256


class _HeaderGetter(Getter[Mapping[str, str]]):
    """Reads a header mapping whose ``get`` finds a lowercase name (Django's
    ``request.headers`` is case-insensitive; the ASGI helper builds a lowercase dict).
    A repeated header arrives joined with ``,``: right for ``tracestate`` and ``baggage``
    (list headers), and it makes two ``traceparent`` headers one invalid value, so the
    trace restarts as §1.2 wants."""

    def get(self, carrier: Mapping[str, str], key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: Mapping[str, str]) -> list[str]:
        return [name.lower() for name in carrier]


_GETTER = _HeaderGetter()


def extract_context(headers: Mapping[str, str]) -> Context:
    """The caller's trace context and baggage; an empty context when there is none
    or the headers are bad. Never raises: a request must not fail over a header."""
    try:
        return propagate.extract(headers, getter=_GETTER)
    except Exception:
        logger.warning("llmrum: could not read the trace headers", exc_info=True)
        return Context()


def local_span(span: trace.Span) -> bool:
    """A span this process made (an instrumentation's server span), not the caller's
    remote context nor the invalid span."""
    span_context = span.get_span_context()
    return span_context.is_valid and not span_context.is_remote


@contextmanager
def continued(headers: Mapping[str, str], *, attach: bool = True) -> Iterator[SpanContext]:
    """Run the body in the caller's trace. Yields the span context the request runs
    under: the instrumentation's server span when one is current, else the caller's
    (remote) span context, else an invalid one. ``attach=False`` reads the caller's
    context without making it current (an instrumentation further in will)."""
    current = trace.get_current_span()
    if current.get_span_context().is_valid:
        # An outer layer already continued the trace (OpenTelemetry's instrumentation
        # extracts the same headers and starts the server span). Attaching the raw remote
        # context again would make the app's spans children of the browser's span
        # instead of the server span.
        stamp_session(current, otel_context.get_current())
        yield current.get_span_context()
        return
    ctx = extract_context(headers)
    if not attach:
        yield trace.get_current_span(ctx).get_span_context()
        return
    token = otel_context.attach(ctx)
    try:
        yield trace.get_current_span(ctx).get_span_context()
    finally:
        otel_context.detach(token)


def stamp_session(span: trace.Span, ctx: Context) -> None:
    """Copy the chat session id from baggage onto the server span, where the
    correlator looks for it (STANDARDS.md §2)."""
    if not span.is_recording():
        return
    session_id = baggage.get_baggage(SESSION_BAGGAGE_KEY, ctx)
    if isinstance(session_id, str) and 0 < len(session_id) <= _MAX_SESSION_ID:
        span.set_attribute(SESSION_BAGGAGE_KEY, session_id)


def outgoing_headers(context: Context | None = None) -> dict[str, str]:
    """``traceparent``, ``tracestate`` and ``baggage`` for a call made from the
    current span (or ``context``). The caller's span must be the one making the call:
    to send a new parent-id, start a CLIENT span first (HTTP client instrumentation
    does)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return carrier
