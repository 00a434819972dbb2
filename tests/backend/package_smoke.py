"""Run by test_package.py with the python of a clean virtualenv that holds only the
llmrum-backend wheel and what it pulls in (``python -I``, so nothing of the checkout is
importable): ``asgi`` without Django installed, ``django`` after the ``[django]`` extra.
Standard library only besides the package itself."""

import asyncio
import importlib.util
import sys

ORIGIN = "https://chat.example.com"
TRACEPARENT = f"00-{'1' * 32}-{'2' * 16}-01"


def asgi() -> None:
    assert importlib.util.find_spec("django") is None, "the wheel pulled Django in"
    from llmrum_asgi import LlmrumMiddleware

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"hi", "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    middleware = LlmrumMiddleware(app, cors_allowed_origins=[ORIGIN])

    def call(method, headers):
        sent = []

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "method": method, "path": "/chat", "query_string": b"",
                 "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}  # fmt: skip
        asyncio.run(middleware(scope, receive, send))
        return sent[0]["status"], dict(sent[0]["headers"])

    status, headers = call("OPTIONS", {"origin": ORIGIN, "access-control-request-method": "POST"})
    assert status == 204 and headers[b"access-control-allow-origin"] == ORIGIN.encode(), headers
    status, headers = call("POST", {"traceparent": TRACEPARENT, "origin": ORIGIN})
    assert headers[b"server-timing"].startswith(f"trace;desc={TRACEPARENT}".encode()), headers
    assert headers[b"timing-allow-origin"] == ORIGIN.encode(), headers
    print("llmrum_asgi ok")


def django() -> None:
    from django.conf import settings

    settings.configure(
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["testserver"],
        MIDDLEWARE=["llmrum_django.middleware.TraceContextMiddleware"],
        LLMRUM_CORS_ALLOWED_ORIGINS=[ORIGIN],
    )
    import django as framework

    framework.setup()
    from django.http import StreamingHttpResponse
    from django.test import Client
    from django.urls import path

    global urlpatterns
    urlpatterns = [path("chat", lambda request: StreamingHttpResponse(iter([b"hi"])))]

    client = Client()
    preflight = client.options(
        "/chat", HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert preflight.status_code == 204 and preflight["Access-Control-Allow-Origin"] == ORIGIN
    response = client.post("/chat", HTTP_TRACEPARENT=TRACEPARENT)
    assert b"".join(response.streaming_content) == b"hi"
    assert response["Server-Timing"].startswith(f"trace;desc={TRACEPARENT}"), response
    print("llmrum_django ok")


if __name__ == "__main__":
    {"asgi": asgi, "django": django}[sys.argv[1]]()
