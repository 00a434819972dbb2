"""What llmrum_django and llmrum_asgi share: the helper's options, the CORS rules for the
trace headers, ``Server-Timing``, trace-context extraction and the first-token mark of a
streamed answer. Framework-free: it imports ``opentelemetry-api`` and the standard
library only, so llmrum_asgi needs no Django. Not an API of its own; import the two
helpers instead.
"""
