"""Real OpenTelemetry for the demo's simulated services: one TracerProvider per
service (the AI gateway and the vLLM-style model server, each with its own
resource), exporting OTLP/HTTP protobuf to llmrum's own ``/v1/traces`` with the
demo application's ingest token.

The providers are private to the demo (never the global provider) and made
lazily in each web process, after gunicorn forked. A BatchSpanProcessor exports
from a background thread, so a sync worker never waits on its own server: the
POST is served by another worker (``serve`` runs two) or, when every worker is
busy, waits in the thread until one is free.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Tracer

GATEWAY_SERVICE = "demo-ai-gateway"
MODEL_SERVICE = "demo-vllm"
SCOPE = "llmrum.demo"
VERSION = "1.0.0"

# The gateway pins its role, as the README advises; the model server does not, like
# vLLM: llmrum recognises it by its SERVER span's GenAI attributes (DESIGN.md §5).
GATEWAY_RESOURCE = {
    "service.name": GATEWAY_SERVICE,
    "service.version": VERSION,
    "llmrum.role": "gateway",
    "deployment.environment.name": "demo",
    "host.name": "gateway-1",
}
MODEL_RESOURCE = {
    "service.name": MODEL_SERVICE,
    "service.version": "0.11.0",
    "deployment.environment.name": "demo",
    "host.name": "gpu-node-1",
}


@dataclass(frozen=True)
class DemoTracers:
    gateway: Tracer
    model: Tracer
    providers: tuple[TracerProvider, ...]

    def flush(self, timeout_ms: int = 10_000) -> bool:
        return all(p.force_flush(timeout_ms) for p in self.providers)


_lock = threading.Lock()
_tracers: dict[tuple[str, str], DemoTracers] = {}


def _provider(resource: dict[str, str], endpoint: str, token: str) -> TracerProvider:
    exporter = OTLPSpanExporter(
        endpoint=endpoint, headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    provider = TracerProvider(resource=Resource.create(resource))
    provider.add_span_processor(
        BatchSpanProcessor(exporter, schedule_delay_millis=500, max_export_batch_size=256)
    )
    return provider


def demo_tracers(*, endpoint: str, token: str) -> DemoTracers:
    """The gateway's and the model server's tracers, exporting to ``endpoint``."""
    key = (endpoint, token)
    with _lock:
        found = _tracers.get(key)
        if found is None:
            gateway = _provider(GATEWAY_RESOURCE, endpoint, token)
            model = _provider(MODEL_RESOURCE, endpoint, token)
            found = DemoTracers(
                gateway=gateway.get_tracer(SCOPE, VERSION),
                model=model.get_tracer(SCOPE, VERSION),
                providers=(gateway, model),
            )
            _tracers[key] = found
        return found


def flush_all(timeout_ms: int = 10_000) -> bool:
    """Export every finished span now (tests; a clean shutdown)."""
    with _lock:
        tracers = list(_tracers.values())
    return all(t.flush(timeout_ms) for t in tracers)


def shutdown_all() -> None:
    with _lock:
        tracers = list(_tracers.values())
        _tracers.clear()
    for t in tracers:
        for provider in t.providers:
            provider.shutdown()
