"""ASGI entry point (``uvicorn rumserver.asgi:application``, or any ASGI server).

Django's ASGI handler reads a whole request body before the view runs, with no
limit, spooling it to disk past a few MiB. On the public ingest endpoints that would
let one client fill the disk, so ``BodyLimit`` stops reading an ingest body one byte
past the endpoint's wire limit and ends it there: the view then sees a body longer
than its limit and answers 413 in the endpoint's own format, and the rest of the
body is never read. Chunked bodies arrive de-chunked from the server, so sized and
chunked bodies take the same path.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from django.conf import settings
from django.core.asgi import get_asgi_application

# As Django's ASGIHandler takes them, the one app BodyLimit wraps.
Scope = dict[str, Any]
Message = Mapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def wire_limit(path: str) -> int | None:
    """The wire limit of the ingest endpoint at ``path``; None for other paths
    (Django's own DATA_UPLOAD_MAX_MEMORY_SIZE guards forms)."""
    if path.startswith("/rum/v1/"):
        return settings.LLMRUM_BEACON_MAX_WIRE_BYTES
    if path == "/api/v1/scores":
        return 64 * 1024
    if path.startswith("/v1/"):
        return settings.LLMRUM_OTLP_MAX_WIRE_BYTES
    return None


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = wire_limit(scope.get("path", "")) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        await self.app(scope, _capped(receive, limit + 1), send)


def _capped(receive: Receive, cap: int) -> Receive:
    seen = 0
    cut = False

    async def capped_receive() -> Message:
        nonlocal seen, cut
        if cut:
            # After the body, Django only listens for a disconnect, and takes any
            # other message as a protocol error. The rest of a cut body is never
            # read: wait until Django cancels the listener with the response sent
            # (the server then closes the connection, its body unread).
            await asyncio.Event().wait()
        message = await receive()
        if message["type"] != "http.request":
            return message
        body = message.get("body", b"")
        if seen + len(body) >= cap and message.get("more_body", False) or seen + len(body) > cap:
            cut = True
            return {"type": "http.request", "body": body[: cap - seen], "more_body": False}
        seen += len(body)
        return message

    return capped_receive


os.environ.setdefault("DJANGO_SETTINGS_MODULE", "rumserver.settings")
application = BodyLimit(get_asgi_application())
