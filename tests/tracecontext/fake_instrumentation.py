"""A stand-in for opentelemetry-instrumentation-django's middleware (not installed
here), which DjangoInstrumentor puts first in MIDDLEWARE: it extracts the request's
headers and keeps the SERVER span current while the rest of the stack runs."""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from opentelemetry import context, propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmrum_django.propagation import format_traceparent

EXPORTER = InMemorySpanExporter()
_provider = TracerProvider()
_provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
_tracer = _provider.get_tracer("fake-instrumentation")


class ServerSpanMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        # As the real one does: attach the extracted context (baggage included), then
        # start the SERVER span in it.
        token = context.attach(
            propagate.extract({k.lower(): v for k, v in request.headers.items()})
        )
        try:
            with _tracer.start_as_current_span(
                f"{request.method} {request.path}", kind=trace.SpanKind.SERVER
            ) as span:
                response = self.get_response(request)
                response["X-Server-Span"] = format_traceparent(span.get_span_context())
        finally:
            context.detach(token)
        return response
