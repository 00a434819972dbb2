"""Continue the browser's trace in a Django gateway (llmrum's backend helper).

A gateway imports this package without installing llmrum: it needs Django and
``opentelemetry-api`` only. ``llmrum_django.middleware.TraceContextMiddleware``
continues the W3C trace the llmrum snippet starts in the browser (``traceparent``,
``tracestate``, ``baggage``, through OpenTelemetry's global propagator), answers CORS
preflights for the chat endpoints, and returns the server's trace context and timing
in ``Server-Timing``. Spans come from off-the-shelf OpenTelemetry instrumentation
(``opentelemetry-instrumentation-django``); this package makes none of its own.
"""
