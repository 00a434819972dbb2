"""The first-token mark of a streamed answer (DESIGN.md §10.2): when the first non-empty
body chunk leaves the helper, a ``first_token`` span event, so llmrum has the server's
time to first token even where the instrumentation gives no ``time_to_first_chunk``
(opentelemetry-instrumentation-openai-v2 2.4b0 gives none).

The event goes on the request's server span while that span is recording. OpenTelemetry's
Django instrumentation ends its server span before a streamed body is sent, and the SDK
drops an event added to an ended span (STANDARDS.md §10.7); then the mark opens a span of
its own, ``llmrum.stream``, a child of the server span from the body's start to its end,
and carries the event there. It comes from the global tracer provider, so the app's own
exporter sends it with the server span's resource (same service, so llmrum gives it the
same role) and §5 reads its event like the server span's. It is never made current: the
spans the body makes stay children of the server span.
"""

from __future__ import annotations

import time

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from llmrum_backend.propagation import local_span

FIRST_TOKEN_EVENT = "first_token"
STREAM_SPAN_NAME = "llmrum.stream"
TRACER_NAME = "llmrum_backend"


class StreamMark:
    """One streamed answer. The adapter calls ``started()`` when the body starts,
    ``chunk_leaving(data)`` just before each chunk goes to the server, and ``ended()``
    when the body ends, fails or is closed (any number of times; the first counts)."""

    def __init__(self, server_span: Span) -> None:
        self.server_span = server_span
        self._started_ns: int | None = None
        self._stream_span: Span | None = None
        self._marked = False
        self._ended = False

    @classmethod
    def for_request(cls, server_span: Span) -> StreamMark | None:
        """None without a server span of this process to measure from: llmrum counts
        server TTFT from the gateway's server span, and a caller's remote span is not one."""
        return cls(server_span) if local_span(server_span) else None

    def started(self) -> None:
        if self._started_ns is not None or self._ended:
            return
        self._started_ns = time.time_ns()
        if not self.server_span.is_recording():
            self._open_stream_span()

    def chunk_leaving(self, data: bytes) -> None:
        if self._marked or self._ended or not data:
            return
        self._marked = True
        now = time.time_ns()
        if self._started_ns is None:
            self._started_ns = now
        target = self._stream_span
        if target is None:
            # Checked again here: a server span may end between the body's start and its
            # first chunk.
            target = (
                self.server_span if self.server_span.is_recording() else self._open_stream_span()
            )
        target.add_event(FIRST_TOKEN_EVENT, timestamp=now)

    def __enter__(self) -> StreamMark:
        """``with mark:`` around the body: started on entry, ended on any exit."""
        self.started()
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        self.ended(error)

    def ended(self, error: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        span, self._stream_span = self._stream_span, None
        if span is None:
            return
        # A closed stream (the client went away: GeneratorExit, CancelledError) is not
        # the server's error.
        if isinstance(error, Exception):
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def _open_stream_span(self) -> Span:
        self._stream_span = _tracer().start_span(
            STREAM_SPAN_NAME,
            context=trace.set_span_in_context(self.server_span),
            kind=SpanKind.INTERNAL,
            start_time=self._started_ns,
        )
        return self._stream_span


def _tracer() -> trace.Tracer:
    # The global provider's, looked up when used: the app sets it up at start.
    return trace.get_tracer(TRACER_NAME)
