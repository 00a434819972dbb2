"""The llmrum side of the full-link tests: the chat request as the browser sends it,
the ``trace`` entry of the gateway's ``Server-Timing``, the gateway's spans arriving in
llmrum, and the variables that send them there (the turn's beacon is
tests.integration.conftest.post_beacon)."""

from __future__ import annotations

import http.client
import time
from pathlib import Path
from urllib.parse import urlsplit

from rumserver.models import Span

SESSION_ID = "abc"


def chat(base: str, path: str, traceparent: str) -> tuple[int, str, list[str]]:
    """POST a chat request as the browser sends it (``traceparent``, the session id in
    ``baggage``); the status, the Server-Timing header, the streamed ``data:`` lines."""
    parts = urlsplit(base)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=15)
    try:
        connection.request(
            "POST",
            path,
            body=b'{"messages": [{"role": "user", "content": "hello"}]}',
            headers={
                "Content-Type": "application/json",
                "traceparent": traceparent,
                "baggage": f"session.id={SESSION_ID}",
            },
        )
        response = connection.getresponse()
        body = response.read().decode()
    finally:
        connection.close()
    data = [line.removeprefix("data: ") for line in body.splitlines() if line]
    return response.status, response.headers.get("Server-Timing", ""), data


def exporting_to(llmrum: str, ingest_token: str, service: str) -> dict[str, str]:
    """The standard OpenTelemetry variables that make a gateway's SDK send its spans to
    llmrum (OTLP/HTTP protobuf, the application's ingest token), as the README says."""
    return {
        "OTEL_SERVICE_NAME": service,
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{llmrum}/v1/traces",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"Authorization=Bearer%20{ingest_token}",
    }


def trace_entry(server_timing: str) -> str:
    """The ``trace`` entry's description: the traceparent of the server's span."""
    for entry in server_timing.split(","):
        name, _, params = entry.strip().partition(";")
        if name == "trace":
            return params.removeprefix("desc=")
    raise AssertionError(f"no trace entry in Server-Timing: {server_timing!r}")


def wait_for_spans(trace_id: str, count: int, log: Path, timeout: float = 15) -> list[Span]:
    deadline = time.monotonic() + timeout
    while True:
        spans = list(Span.objects.filter(trace_id=trace_id).order_by("start_ns"))
        if len(spans) >= count:
            return spans
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(spans)} of {count} spans arrived; gateway log:\n"
                + log.read_text(errors="replace")[-4000:]
            )
        time.sleep(0.2)
