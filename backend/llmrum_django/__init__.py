"""Continue the browser's trace in a Django gateway (llmrum's backend helper for Django).

Part of the ``llmrum-backend`` package (``pip install "llmrum-backend[django]"``): it
needs Django and ``opentelemetry-api`` only. ``llmrum_django.middleware.TraceContextMiddleware``
continues the W3C trace the llmrum snippet starts in the browser (``traceparent``,
``tracestate``, ``baggage``, through OpenTelemetry's global propagator), answers CORS
preflights for the chat endpoints, returns the server's trace context and timing in
``Server-Timing``, and marks when a streamed answer's first non-empty chunk leaves
(``first_token``). Server spans come from off-the-shelf OpenTelemetry instrumentation
(``opentelemetry-instrumentation-django``); the helper makes a span of its own only to
carry that mark once the server span has ended (``llmrum.stream``, llmrum_backend.stream).
"""
