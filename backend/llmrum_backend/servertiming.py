"""The ``Server-Timing`` entries the llmrum snippet reads back (STANDARDS.md §1.8,
§6.3, §7.3).

- ``trace;desc=00-<trace-id>-<span-id>-<flags>``: the W3C Level 3 draft's response
  trace context. It names the server span when OpenTelemetry instrumentation made
  one, else it echoes the caller's context (same ids as the ``traceparent`` the
  browser sent, meaning "continued, no server span of its own"). No entry when the
  request carried no valid context and no span exists: there is no trace to name.
- ``total;dur=<ms>``: time in the helper, from the request reaching it to the
  response headers leaving it (server processing time, t2 - t1).
- ``llmrum-now;desc=<epoch ms>``: the server's wall clock when the response headers
  left (t2). With ``total`` it gives t1 = t2 - total, so the snippet's send and
  receive times (t0, t3) give the per-request clock offset
  ((t1 - t0) + (t2 - t3)) / 2 of §7.3.

``Server-Timing`` is a header, so for a streamed answer it cannot carry the first
token time; the ``first_token`` span event does (llmrum_backend.stream).
"""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.trace import SpanContext

# Sampled and random-trace-id; every other bit is reserved and sent as 0 (§1.4).
KNOWN_FLAGS = 0x03


def format_traceparent(span_context: SpanContext) -> str:
    """Version 00 ``traceparent`` value, reserved flag bits cleared (§1.3, §1.4)."""
    trace_id = trace.format_trace_id(span_context.trace_id)
    span_id = trace.format_span_id(span_context.span_id)
    return f"00-{trace_id}-{span_id}-{span_context.trace_flags & KNOWN_FLAGS:02x}"


def server_timing_value(*, span_context: SpanContext, duration_ms: float, now_ms: float) -> str:
    entries = []
    if span_context.is_valid:
        entries.append(f"trace;desc={format_traceparent(span_context)}")
    entries.append(f"total;dur={max(duration_ms, 0.0):.3f}")
    entries.append(f"llmrum-now;desc={now_ms:.3f}")
    return ", ".join(entries)


def appended(existing: str | None, value: str) -> str:
    """Append to the app's own entries rather than replace them."""
    return f"{existing}, {value}" if existing else value
