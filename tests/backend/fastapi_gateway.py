"""A FastAPI chat gateway set up as the README says: the OpenTelemetry SDK exporting
OTLP/HTTP to llmrum by the standard variables (``OTEL_SERVICE_NAME``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_HEADERS``),
``FastAPIInstrumentor`` for the server span, the OpenAI SDK instrumentation for the
model call, and llmrum_asgi's middleware. The batch processor exports on a timer and
at the app's shutdown: uvicorn ends its graceful stop by raising SIGTERM again, so the
SDK's own flush at interpreter exit never runs under it.

Run it as ``uvicorn tests.backend.fastapi_gateway:app``.
"""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from openai import AsyncOpenAI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from llmrum_asgi import LlmrumMiddleware
from tests.backend.gateway_answer import (
    FirstByte,
    content_of,
    create_arguments,
    openai_settings,
)

provider = TracerProvider(resource=Resource.create())  # service.name: OTEL_SERVICE_NAME
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    provider.shutdown()  # exports what is left


app = FastAPI(lifespan=lifespan)
app.add_middleware(
    LlmrumMiddleware,
    cors_allowed_origins=["https://chat.example.com"],
    cors_urls_regex=r"^/api/",
)
FastAPIInstrumentor.instrument_app(app)  # its middleware wraps everything, ours included


@app.post("/api/chat-stream")
async def chat_stream(request: Request) -> StreamingResponse:
    arguments = create_arguments(await request.body())
    client = AsyncOpenAI(**openai_settings())

    async def answer() -> AsyncIterator[str]:
        # The model is called lazily, inside the streamed body, as gateways do.
        first = FirstByte()
        stream = await client.chat.completions.create(**arguments)
        async for chunk in stream:
            if content := content_of(chunk):
                yield first.event(content)
        for event in first.closing():
            yield event

    return StreamingResponse(answer(), media_type="text/event-stream")
