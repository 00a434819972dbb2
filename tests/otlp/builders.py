"""ExportTraceServiceRequest builders for receiver tests."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span


def kv(key: str, value: Any) -> KeyValue:
    any_value = AnyValue()
    if isinstance(value, bool):
        any_value.bool_value = value
    elif isinstance(value, int):
        any_value.int_value = value
    elif isinstance(value, float):
        any_value.double_value = value
    else:
        any_value.string_value = value
    return KeyValue(key=key, value=any_value)


def span(
    *,
    trace_id: bytes | None = None,
    span_id: bytes | None = None,
    parent: bytes = b"",
    name: str = "POST /api/chat",
    kind: int = Span.SPAN_KIND_SERVER,
    attributes: dict[str, Any] | None = None,
    start_ns: int | None = None,
    duration_ns: int = 250_000_000,
) -> Span:
    start = start_ns if start_ns is not None else time.time_ns() - 1_000_000_000
    out = Span(
        trace_id=trace_id if trace_id is not None else secrets.token_bytes(16),
        span_id=span_id if span_id is not None else secrets.token_bytes(8),
        parent_span_id=parent,
        name=name,
        kind=kind,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration_ns,
    )
    for key, value in (attributes or {}).items():
        out.attributes.append(kv(key, value))
    return out


def request(
    spans: list[Span], service: str = "chat-gateway", resource: dict[str, Any] | None = None
) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    for key, value in {"service.name": service, **(resource or {})}.items():
        rs.resource.attributes.append(kv(key, value))
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    ss.spans.extend(spans)
    return req


def otlp_json(trace_id: str, span_id: str, parent: str = "", **extra: Any) -> bytes:
    """An OTLP/JSON body as a browser SDK or a Collector sends it: hex ids, string int64s."""
    now = time.time_ns()
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "web-gw"}}]
                },
                "scopeSpans": [
                    {
                        "scope": {"name": "@opentelemetry/instrumentation-fetch", "version": "0.1"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "parentSpanId": parent,
                                "name": "POST /v1/chat/completions",
                                "kind": 2,
                                "startTimeUnixNano": str(now - 2_000_000_000),
                                "endTimeUnixNano": now - 1_000_000_000,
                                "attributes": [
                                    {"key": "http.status_code", "value": {"intValue": "200"}},
                                    {"key": "gen_ai.request.model", "value": {"stringValue": "m"}},
                                    {"key": "ok", "value": {"boolValue": True}},
                                    {"key": "list", "value": {"arrayValue": {"values": [
                                        {"stringValue": "a"}, {"doubleValue": 1.5}]}}},
                                ],
                                "status": {"code": 1},
                                "unknownFutureField": {"x": 1},
                                **extra,
                            }
                        ],
                    }
                ],
            }
        ]
    }  # fmt: skip
    return json.dumps(body).encode()
