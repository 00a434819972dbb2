"""A tiny Starlette chat backend for the ASGI helper's in-process tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from tests.tracecontext.views import seen_context


async def chat(request: Request) -> JSONResponse:
    return JSONResponse(
        seen_context(),
        headers={
            "Server-Timing": 'db;dur=1.5;desc="lookup"',
            "Access-Control-Expose-Headers": "X-Request-Id",
            "Vary": "Accept-Encoding",
        },
    )


async def stream(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        # Starlette sends each chunk as its own message, the empty one included.
        for chunk in (b"", b"hello", b" world"):
            yield chunk

    return StreamingResponse(body(), media_type="text/plain")


async def failing(request: Request) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("model connection lost")

    return StreamingResponse(body(), media_type="text/plain")


async def elsewhere(request: Request) -> PlainTextResponse:
    return PlainTextResponse("not a chat endpoint")


app = Starlette(
    routes=[
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/stream", stream, methods=["POST"]),
        Route("/api/failing", failing, methods=["POST"]),
        Route("/elsewhere", elsewhere),
    ]
)
