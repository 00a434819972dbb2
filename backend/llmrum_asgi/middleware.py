"""``LlmrumMiddleware``, a pure ASGI middleware (STANDARDS.md §10.7).

```python
app.add_middleware(
    LlmrumMiddleware,
    cors_allowed_origins=["https://chat.example.com"],
    cors_urls_regex=r"^/api/",
)
```

Options are llmrum_django's settings as keyword arguments (``LLMRUM_CORS_MAX_AGE`` is
``cors_max_age``, …; llmrum_backend.options); a bad value raises ``ValueError`` naming
the argument when the middleware is built. Only ``http`` requests are handled; WebSocket
and lifespan messages pass through untouched. The CORS paths are matched against the
path below the app's ``root_path``, as the app's router sees it.

Where the server span comes from (STANDARDS.md §10.7, middleware ordering):

- OpenTelemetry's ASGI middleware outside this one (``FastAPIInstrumentor`` always puts
  it outermost; with Starlette, call ``StarletteInstrumentor.instrument_app`` after
  ``add_middleware``): its server span is current when a request arrives here, and is
  used from then on.
- OpenTelemetry's ASGI middleware inside this one: the helper leaves the trace headers to
  it (attaching the caller's context first would make it start an INTERNAL span instead
  of the SERVER span llmrum looks for) and takes the span current when the response
  starts, which is its server span.
- No instrumentation: the helper attaches the caller's context, so the app's own spans
  (an OpenAI client span, say) continue the browser's trace; there is no server span,
  hence no first-token mark.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanContext

from llmrum_backend.cors import CorsRules, Headers, merge_list_header
from llmrum_backend.options import (
    DEFAULT_ALLOW_HEADERS,
    DEFAULT_ALLOW_METHODS,
    DEFAULT_MAX_AGE,
    HelperOptions,
)
from llmrum_backend.propagation import continued, local_span, stamp_session
from llmrum_backend.servertiming import appended, server_timing_value
from llmrum_backend.stream import StreamMark

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# How far down the wrapped app's ``.app`` chain to look for OpenTelemetry's middleware.
_CHAIN_DEPTH = 32


class LlmrumMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        cors_allowed_origins: Iterable[str] = (),
        cors_urls_regex: str = r"^.*$",
        cors_allow_methods: Iterable[str] = DEFAULT_ALLOW_METHODS,
        cors_allow_headers: Iterable[str] = DEFAULT_ALLOW_HEADERS,
        cors_expose_headers: Iterable[str] = (),
        cors_allow_credentials: bool = False,
        cors_max_age: int = DEFAULT_MAX_AGE,
        server_timing: bool = True,
    ) -> None:
        self.app = app
        self.options = HelperOptions.build(
            {
                "cors_allowed_origins": cors_allowed_origins,
                "cors_urls_regex": cors_urls_regex,
                "cors_allow_methods": cors_allow_methods,
                "cors_allow_headers": cors_allow_headers,
                "cors_expose_headers": cors_expose_headers,
                "cors_allow_credentials": cors_allow_credentials,
                "cors_max_age": cors_max_age,
                "server_timing": server_timing,
            }
        )
        self.cors = CorsRules(self.options)
        self._instrumented_inside: bool | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = _Request(scope)
        if await self._answered_preflight(request, send):
            return
        started = time.perf_counter()
        outer_span = trace.get_current_span()
        attach = not local_span(outer_span) and not self.instrumented_inside()
        with continued(request.headers, attach=attach) as span_context:
            response = _Response(self, request, span_context, outer_span, started, send)
            try:
                await self.app(scope, receive, response.send)
            except BaseException as error:
                response.ended(error)
                raise
            response.ended(None)

    async def _answered_preflight(self, request: _Request, send: Send) -> bool:
        try:
            if not (
                self.cors.is_preflight(request.method, request.asks_for_method)
                and self.cors.applies(request.path)
            ):
                return False
            headers = [*self.cors.preflight_headers(request.origin), ("Vary", "Origin")]
        except Exception:
            logger.exception("llmrum_asgi: preflight handling failed; passing it on")
            return False
        # Answered here, before the app's routing can turn it into a 405 or a redirect.
        await send({"type": "http.response.start", "status": 204, "headers": _encode(headers)})
        await send({"type": "http.response.body", "body": b""})
        return True

    def instrumented_inside(self) -> bool:
        """Whether OpenTelemetry's ASGI middleware is further in (Starlette builds its
        middleware stack inner layer first, each holding the next as ``.app``)."""
        if self._instrumented_inside is None:
            found = False
            layer: object = self.app  # any object down the chain, not only ASGI apps
            for _ in range(_CHAIN_DEPTH):
                kind = type(layer)
                if kind.__name__ == "OpenTelemetryMiddleware" and kind.__module__.startswith(
                    "opentelemetry.instrumentation.asgi"
                ):
                    found = True
                    break
                layer = getattr(layer, "app", None)
                if layer is None:
                    break
            self._instrumented_inside = found
        return self._instrumented_inside


class _Request:
    def __init__(self, scope: Scope) -> None:
        headers: dict[str, str] = {}
        for raw_name, raw_value in scope.get("headers") or ():
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            # Repeated headers joined as a WSGI server joins them (llmrum_backend.propagation).
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        self.headers = headers
        self.method: str = scope.get("method", "")
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        self.path = path[len(root) :] if root and path.startswith(root) else path
        self.origin = headers.get("origin")
        self.asks_for_method = "access-control-request-method" in headers


class _Response:
    """One request's ``send``: response headers on ``http.response.start``, the
    first-token mark on the body messages."""

    def __init__(
        self,
        helper: LlmrumMiddleware,
        request: _Request,
        span_context: SpanContext,
        outer_span: trace.Span,
        started: float,
        send: Send,
    ) -> None:
        self.helper = helper
        self.request = request
        self.span_context = span_context
        self.outer_span = outer_span
        self.started = started
        self.downstream = send
        self.mark: StreamMark | None = None
        self.streaming = False

    async def send(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            message = self._decorated(message)
        elif kind == "http.response.body":
            self._body_leaving(message)
        await self.downstream(message)
        if kind == "http.response.body" and self.streaming and not message.get("more_body"):
            self.ended(None)

    def ended(self, error: BaseException | None) -> None:
        if self.mark is not None:
            self.mark.ended(error)

    def _decorated(self, message: Message) -> Message:
        # Decoration is best effort: a response must never fail over it.
        try:
            server_span = self._server_span()
            self.mark = StreamMark.for_request(server_span)
            span_context = (
                server_span.get_span_context() if local_span(server_span) else self.span_context
            )
            return {**message, "headers": self._headers(message, span_context)}
        except Exception:
            logger.exception("llmrum_asgi: could not add the response headers")
            return message

    def _server_span(self) -> trace.Span:
        if local_span(self.outer_span):
            return self.outer_span
        if self.helper.instrumented_inside():
            # OpenTelemetry's middleware calls this send inside its server span.
            span = trace.get_current_span()
            stamp_session(span, otel_context.get_current())
            return span
        return trace.INVALID_SPAN

    def _headers(self, message: Message, span_context: SpanContext) -> list[tuple[bytes, bytes]]:
        headers = _Headers(message.get("headers") or ())
        helper, request = self.helper, self.request
        if helper.cors.applies(request.path):
            for name, value in helper.cors.response_headers(
                request.origin, headers.get("access-control-expose-headers")
            ):
                headers.set(name, value)
            headers.set("Vary", merge_list_header(headers.get("vary"), ("Origin",)))
        if helper.options.server_timing:
            value = server_timing_value(
                span_context=span_context,
                duration_ms=(time.perf_counter() - self.started) * 1000.0,
                now_ms=time.time() * 1000.0,
            )
            headers.set("Server-Timing", appended(headers.get("server-timing"), value))
        return headers.raw

    def _body_leaving(self, message: Message) -> None:
        if self.mark is None:
            return
        if not self.streaming:
            if not message.get("more_body"):
                return  # the whole body in one message: not a streamed answer
            self.streaming = True
            self.mark.started()
        self.mark.chunk_leaving(message.get("body") or b"")


class _Headers:
    """An ASGI header list; ``set`` replaces every header of that name."""

    def __init__(self, raw: Iterable[tuple[bytes, bytes]]) -> None:
        self.raw = list(raw)

    def get(self, name: str) -> str | None:
        key = name.encode("latin-1")
        values = [v.decode("latin-1") for n, v in self.raw if n.lower() == key]
        return ", ".join(values) if values else None

    def set(self, name: str, value: str) -> None:
        key = name.lower().encode("latin-1")
        self.raw = [(n, v) for n, v in self.raw if n.lower() != key]
        self.raw.append((key, value.encode("latin-1")))


def _encode(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
