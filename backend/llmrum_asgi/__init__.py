"""llmrum's backend helper for any ASGI app (FastAPI, Starlette, Quart, Django's ASGI
handler, …): ``LlmrumMiddleware``.

Part of the ``llmrum-backend`` package; it needs ``opentelemetry-api`` only (no Django,
no Starlette). Like llmrum_django it continues the browser's W3C trace, answers the CORS
preflight the trace headers cause, sends ``Server-Timing``, and marks when a streamed
answer's first non-empty body chunk leaves (``first_token``, DESIGN.md §10.2).
"""

from llmrum_asgi.middleware import LlmrumMiddleware

__all__ = ["LlmrumMiddleware"]
