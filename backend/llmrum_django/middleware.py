"""``TraceContextMiddleware``: continue the browser's trace, answer CORS for the chat
endpoints, report the server's trace context and timing in ``Server-Timing``, and mark
when a streamed answer's first non-empty chunk leaves (``first_token``, DESIGN.md §10.2).

Settings (all optional; see the README section on llmrum_django):

- ``LLMRUM_CORS_ALLOWED_ORIGINS``: origins allowed to call the chat endpoints
  cross-origin, e.g. ``["https://chat.example.com"]``. Empty (the default): no CORS
  handling at all.
- ``LLMRUM_CORS_URLS_REGEX``: paths (``request.path_info``) the CORS handling applies
  to; default every path.
- ``LLMRUM_CORS_ALLOW_METHODS`` (``["GET", "POST"]``), ``LLMRUM_CORS_ALLOW_HEADERS``
  (``["accept", "authorization", "content-type"]``; ``traceparent``, ``tracestate``
  and ``baggage`` are always added), ``LLMRUM_CORS_EXPOSE_HEADERS`` (``Server-Timing``
  is always exposed), ``LLMRUM_CORS_ALLOW_CREDENTIALS`` (``False``),
  ``LLMRUM_CORS_MAX_AGE`` (7200 seconds).
- ``LLMRUM_SERVER_TIMING``: add the ``Server-Timing`` entries (``True``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import FileResponse, HttpRequest, HttpResponseBase
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import SpanContext

from llmrum_backend.stream import StreamMark
from llmrum_django import conf
from llmrum_django.cors import CorsPolicy
from llmrum_django.propagation import request_context
from llmrum_django.servertiming import add_server_timing, server_timing_value

logger = logging.getLogger(__name__)


class TraceContextMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.config = conf.load()
        self.cors = CorsPolicy(self.config)
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self.__acall__(request)
        preflight = self._preflight(request)
        if preflight is not None:
            return preflight
        started = time.perf_counter()
        with request_context(request) as span_context:
            response = self.get_response(request)
            _stream_in_context(response, otel_context.get_current())
        self._finish(request, response, span_context, started)
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        preflight = self._preflight(request)
        if preflight is not None:
            return preflight
        started = time.perf_counter()
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        with request_context(request) as span_context:
            response = await get_response(request)
            _stream_in_context(response, otel_context.get_current())
        self._finish(request, response, span_context, started)
        return response

    def _preflight(self, request: HttpRequest) -> HttpResponseBase | None:
        try:
            if self.cors.is_preflight(request) and self.cors.applies(request):
                return self.cors.preflight_response(request)
        except Exception:
            logger.exception("llmrum_django: preflight handling failed; passing it on")
        return None

    def _finish(
        self,
        request: HttpRequest,
        response: HttpResponseBase,
        span_context: SpanContext,
        started: float,
    ) -> None:
        # Decoration is best effort: a response must never fail over it.
        try:
            if self.cors.applies(request):
                self.cors.decorate(request, response)
            if self.config.server_timing:
                value = server_timing_value(
                    span_context=span_context,
                    duration_ms=(time.perf_counter() - started) * 1000.0,
                    now_ms=time.time() * 1000.0,
                )
                add_server_timing(response, value)
        except Exception:
            logger.exception("llmrum_django: could not add the response headers")


def _stream_in_context(response: HttpResponseBase, ctx: Context) -> None:
    """A streamed answer's body runs after the middleware returned, outside the
    request's context. LLM gateways often call the model lazily inside that body, so
    its spans would start a trace of their own; run each step in the request's
    context instead, and mark when its first non-empty chunk leaves (against the server
    span current in ``ctx``). Files keep their sendfile path and need neither."""
    if not getattr(response, "streaming", False) or isinstance(response, FileResponse):
        return
    mark = StreamMark.for_request(trace.get_current_span(ctx))
    if response.is_async:  # type: ignore[attr-defined]
        response.streaming_content = _aiterate_in(ctx, response.streaming_content, mark)  # type: ignore[attr-defined]
    else:
        response.streaming_content = _iterate_in(ctx, response.streaming_content, mark)  # type: ignore[attr-defined]
    response.close = _context_kept(response.close)  # type: ignore[method-assign]


def _context_kept(close: Callable[[], None]) -> Callable[[], None]:
    """The server closes the body (a client gone mid-answer) outside the request's
    context. A body that keeps a span current across its yields then ends that span in
    the server's context, resetting it to the request's: the next request on the thread
    would start inside this one's trace. Put the server's context back."""

    def closing() -> None:
        before = otel_context.get_current()
        try:
            close()
        finally:
            if otel_context.get_current() is not before:
                otel_context.attach(before)

    return closing


def _iterate_in(ctx: Context, content: Iterable[bytes], mark: StreamMark | None) -> Iterator[bytes]:
    iterator = iter(content)
    # WSGI servers send the headers with the first body chunk, which a gateway makes
    # only once the model's first token is in: the browser would see the headers late,
    # and Server-Timing's llmrum-now (stamped when the response left the middleware)
    # would no longer be when they left, bending the clock-skew sample it gives. An
    # empty chunk makes the server send them now (gunicorn, wsgiref and Werkzeug write
    # the headers on any write, and no chunk for an empty one).
    yield b""
    # The mark ends with the body: exhausted, failed, or closed by the server (GeneratorExit).
    with mark or nullcontext():
        while True:
            # Attach around each step, never across a yield: the server may resume the
            # generator from another context, and a token must be detached where it was
            # made. Each step starts in the context the previous one left, so a span the
            # body keeps current across a yield (``with tracer.start_as_current_span(...)``
            # around the model's chunks) stays the parent of the spans it makes after
            # that yield.
            token = otel_context.attach(ctx)
            try:
                chunk = next(iterator)
            except StopIteration:
                return
            finally:
                ctx = otel_context.get_current()
                otel_context.detach(token)
            if mark is not None:
                mark.chunk_leaving(chunk)
            yield chunk


async def _aiterate_in(
    ctx: Context, content: AsyncIterator[bytes], mark: StreamMark | None
) -> AsyncIterator[bytes]:
    iterator = aiter(content)
    with mark or nullcontext():
        while True:
            token = otel_context.attach(ctx)
            try:
                chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                ctx = otel_context.get_current()
                otel_context.detach(token)
            if mark is not None:
                mark.chunk_leaving(chunk)
            yield chunk
