"""The OpenTelemetry JS OTLP/HTTP exporters (JSON and protobuf, plain and gzip), run
by Node.js against llmrum under gunicorn: they send Transfer-Encoding: chunked with
no Content-Length, and every span must come back intact through the read API.
Both SDK lines: 2.x (exporters 0.223, sdk-trace-base) and 3.x (exporters 0.301,
sdk-trace), the one @opentelemetry/sdk-node installs today."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests import factories
from tests.clients.relay import relay_to
from tests.clients.trace_api import api_token, assert_spans_arrived, read_stitched_trace

pytestmark = pytest.mark.postgres

MEDIA = {"json": "application/json", "proto": "application/x-protobuf"}
LINES = {"sdk2": ".", "sdk3": "sdk3"}  # the packages' directory, under tests/clients
EXPORTER_VERSIONS = {"sdk2": "0.223.1", "sdk3": "0.301.2"}  # as pinned there


def run_node_gateway(clients: Path, line: str, config: dict, env: dict[str, str]) -> list[dict]:
    """Run the gateway script with the packages of one SDK line (its working directory)."""
    done = subprocess.run(
        ["node", str(clients / "otel_node_export.mjs"), json.dumps(config)],
        cwd=clients / LINES[line], env={**os.environ, **env}, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.mark.parametrize(
    ("line", "protocol", "compression", "configured_by"),
    [
        ("sdk2", "json", None, "options"),
        ("sdk2", "proto", None, "environment"),
        ("sdk2", "json", "gzip", "environment"),
        ("sdk2", "proto", "gzip", "options"),
        ("sdk3", "json", None, "environment"),
        ("sdk3", "proto", "gzip", "options"),
    ],
)
def test_a_node_gateway_exports_every_span_intact(
    node_clients, start_web, line, protocol, compression, configured_by
):
    app = factories.make_app()
    base = start_web()
    with relay_to(base) as relay:
        url = f"{relay.url}/v1/traces"
        if configured_by == "options":
            config = {"url": url, "headers": {"Authorization": f"Bearer {app.ingest_token}"}}
            config["compression"] = compression or "none"
            env = {}
        else:  # the README's lines: OTEL_EXPORTER_OTLP_TRACES_*
            config = {}
            env = {
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url,
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS": f"Authorization=Bearer%20{app.ingest_token}",
                "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION": compression or "none",
            }
        spans = run_node_gateway(node_clients, line, {"protocol": protocol, **config}, env)
        posts = [r for r in relay.requests() if r.method == "POST"]
        statuses = relay.statuses()

    # What the exporter put on the wire (and gunicorn got, byte for byte): two chunked bodies.
    assert [r.path for r in posts] == ["/v1/traces", "/v1/traces"]
    for request in posts:
        assert request.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in request.headers
        assert request.headers["content-type"] == MEDIA[protocol]
        assert request.headers.get("content-encoding") == compression
        agent = f"OTel-OTLP-Exporter-JavaScript/{EXPORTER_VERSIONS[line]}"
        assert request.headers["user-agent"] == agent
    assert statuses == [200, 200]

    assert len(spans) == 5 and len({s["trace_id"] for s in spans}) == 1
    answer = read_stitched_trace(base, api_token(app), spans[0]["trace_id"])
    assert answer["app"] == app.application.slug
    assert_spans_arrived(answer, spans, service="node-gateway", role="gateway")
    names = {s["name"]: s for s in spans}
    assert names["chat gpt-4o-mini"]["parent_span_id"] == names["POST /api/chat"]["span_id"]
    assert names["process chat.done"]["parent_span_id"] == names["publish chat.done"]["span_id"]
