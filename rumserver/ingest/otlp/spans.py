"""From a decoded ``ExportTraceServiceRequest`` to span rows, without the database.

Each span is checked on its own: a span with a bad id or time is refused alone
and counted for OTLP's partial success, never sinking the request. Attributes
are kept as they come (as JSON values) within limits, GenAI attributes (current
and older names, vLLM's) are read into typed columns, and prompt and completion
content is dropped unless the application opted in.
"""

from __future__ import annotations

import base64
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rumserver.ingest.errors import IngestError
from rumserver.ingest.text import storable_text
from rumserver.roles import SOURCE

MAX_ATTRIBUTES = 128  # per span, resource, event or link (the OpenTelemetry SDK's default)
MAX_VALUE_LENGTH = 8192  # characters of one string value
MAX_ARRAY_ITEMS = 128
MAX_EVENTS = 128
MAX_LINKS = 128
MAX_VALUE_DEPTH = 8
MAX_INT64 = 2**63 - 1
MAX_INT32 = 2**31 - 1  # token counts go to integer columns
# A server-side TTFT or queue time of an hour or more is a broken clock or unit, not a
# measurement; such a figure stays in the attributes but never reaches a typed column.
MAX_LATENCY_S = 3600.0

# Prompt and completion content, by attribute name (GenAI conventions, current and
# deprecated, plus the common OpenLLMetry / OpenInference spellings).
CONTENT_ATTRIBUTES = frozenset(
    {
        "gen_ai.input.messages",
        "gen_ai.output.messages",
        "gen_ai.system_instructions",
        "gen_ai.tool.definitions",
        "gen_ai.tool.call.arguments",
        "gen_ai.tool.call.result",
        "gen_ai.prompt",
        "gen_ai.completion",
        "input.value",
        "output.value",
    }
)
CONTENT_PREFIXES = (
    "gen_ai.prompt.",
    "gen_ai.completion.",
    "llm.input_messages",
    "llm.output_messages",
)
CONTENT_EVENTS = frozenset(
    {
        "gen_ai.system.message",
        "gen_ai.user.message",
        "gen_ai.assistant.message",
        "gen_ai.tool.message",
        "gen_ai.choice",
        "gen_ai.content.prompt",
        "gen_ai.content.completion",
        "gen_ai.client.inference.operation.details",
    }
)
FIRST_TOKEN_EVENTS = ("first_token", "gen_ai.first_token")
# Where a span's first token comes from, first found wins (DESIGN.md §5). vLLM's name
# only ever appears on model servers; the correlator picks per role.
TTFT_ATTRIBUTES = (
    "gen_ai.latency.time_to_first_token",
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.server.time_to_first_token",
)


@dataclass
class SpanRow:
    trace_id: str
    span_id: str
    parent_span_id: str
    trace_state: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int
    status_message: str
    service: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: dict[str, Any]
    events: list[dict[str, Any]]
    links: list[dict[str, Any]]
    dropped_attributes: int = 0
    truncated: bool = False
    gen_ai_operation: str = ""
    gen_ai_provider: str = ""
    request_model: str = ""
    response_model: str = ""
    conversation_id: str = ""
    input_tokens: int | None = None
    output_tokens: int | None = None
    ttft_s: float | None = None
    ttft_source: str = ""
    queue_s: float | None = None


@dataclass
class MappedRequest:
    rows: list[SpanRow] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def rejected_spans(self) -> int:
        return sum(self.rejected.values())

    @property
    def error_message(self) -> str:
        return "; ".join(f"{n} span(s): {reason}" for reason, n in sorted(self.rejected.items()))

    @property
    def trace_ids(self) -> list[str]:
        return sorted({row.trace_id for row in self.rows})


class _Cut:
    """Counts what the limits took away from one span."""

    def __init__(self) -> None:
        self.truncated = False
        self.dropped = 0


def _text(value: str, cut: _Cut, limit: int = MAX_VALUE_LENGTH) -> str:
    if len(value) <= limit and "\x00" not in value:
        return value  # nearly every value, without a call
    cut.truncated = True
    return storable_text(value, limit)[0]


def _any_value(value: AnyValue, cut: _Cut, depth: int = 0) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return _text(value.string_value, cut)
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        number = value.double_value
        # JSON (and jsonb) have no NaN or Infinity: keep them readable as strings.
        return number if math.isfinite(number) else str(number)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value[:MAX_VALUE_LENGTH]).decode()
    if depth >= MAX_VALUE_DEPTH:
        cut.truncated = True
        return None
    if kind == "array_value":
        items = value.array_value.values
        if len(items) > MAX_ARRAY_ITEMS:
            cut.truncated = True
        return [_any_value(v, cut, depth + 1) for v in items[:MAX_ARRAY_ITEMS]]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values, cut, depth + 1)
    return None


def _attributes(pairs: Any, cut: _Cut, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if len(out) >= MAX_ATTRIBUTES:
            cut.dropped += len(pairs) - MAX_ATTRIBUTES
            break
        out[_text(pair.key, cut, 256)] = _any_value(pair.value, cut, depth)
    return out


def _hex_id(raw: bytes, size: int) -> str | None:
    if len(raw) != size or not any(raw):
        return None
    return raw.hex()


def _number(attributes: dict[str, Any], *names: str) -> float | None:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
            return float(value)
    return None


def _int(attributes: dict[str, Any], *names: str) -> int | None:
    value = _number(attributes, *names)
    return int(value) if value is not None and value <= MAX_INT32 else None


def _seconds(attributes: dict[str, Any], name: str) -> float | None:
    value = _number(attributes, name)
    return value if value is not None and value < MAX_LATENCY_S else None


def _str(attributes: dict[str, Any], *names: str, limit: int = 128) -> str:
    for name in names:
        value = attributes.get(name)
        if isinstance(value, str) and value:
            return value[:limit]
    return ""


def _drop_content(row: SpanRow) -> None:
    dropped = 0
    for key in list(row.attributes):
        if key in CONTENT_ATTRIBUTES or key.startswith(CONTENT_PREFIXES):
            del row.attributes[key]
            dropped += 1
    for event in row.events:
        if event["name"] in CONTENT_EVENTS and event["attributes"]:
            dropped += len(event["attributes"])
            event["attributes"] = {}
    if dropped:
        row.attributes["llmrum.content_dropped"] = dropped


def _read_gen_ai(row: SpanRow) -> None:
    a = row.attributes
    row.gen_ai_operation = _str(a, "gen_ai.operation.name", limit=64)
    row.gen_ai_provider = _str(a, "gen_ai.provider.name", "gen_ai.system", limit=64)
    row.request_model = _str(a, "gen_ai.request.model")
    row.response_model = _str(a, "gen_ai.response.model")
    row.conversation_id = _str(a, "gen_ai.conversation.id")
    row.input_tokens = _int(a, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
    row.output_tokens = _int(a, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
    row.queue_s = _seconds(a, "gen_ai.latency.time_in_queue")
    for name in TTFT_ATTRIBUTES:
        seconds = _seconds(a, name)
        if seconds is not None:
            row.ttft_s, row.ttft_source = seconds, name
            return
    for event in row.events:
        # Only an event inside its span measures anything: one stamped before the start
        # would give a negative TTFT, one after the end a figure the span contradicts.
        if event["name"] not in FIRST_TOKEN_EVENTS:
            continue
        if row.start_ns <= event["time_ns"] <= row.end_ns:
            seconds = (event["time_ns"] - row.start_ns) / 1e9
            if seconds < MAX_LATENCY_S:
                row.ttft_s, row.ttft_source = seconds, f"event:{event['name']}"
                return


def mark_source(rows: list[SpanRow], source: str) -> None:
    """Stamp where spans came from (``browser-otlp``) on the span and its resource: the
    stitch reads it from the resource, which is small, to keep such spans out of the
    server roles (rumserver.roles)."""
    for row in rows:
        row.attributes[SOURCE] = source
        row.resource = {**row.resource, SOURCE: source}


def map_request(
    request: ExportTraceServiceRequest, *, keep_content: bool, max_spans: int
) -> MappedRequest:
    total = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    if total > max_spans:
        raise IngestError(413, f"at most {max_spans} spans a request, got {total}")
    mapped = MappedRequest()
    seen: set[tuple[str, str]] = set()
    for resource_spans in request.resource_spans:
        resource_cut = _Cut()
        resource = _attributes(resource_spans.resource.attributes, resource_cut)
        service = str(resource.get("service.name") or "unknown_service")[:128]
        for scope_spans in resource_spans.scope_spans:
            scope = {
                "name": _text(scope_spans.scope.name, resource_cut, 256),
                "version": _text(scope_spans.scope.version, resource_cut, 128),
            }
            for span in scope_spans.spans:
                row, reason = _map_span(span, resource=resource, scope=scope, service=service)
                if row is None:
                    mapped.rejected[reason] += 1
                    continue
                if (row.trace_id, row.span_id) in seen:
                    continue  # the same span twice in one request: store it once
                seen.add((row.trace_id, row.span_id))
                if not keep_content:
                    _drop_content(row)
                _read_gen_ai(row)
                mapped.rows.append(row)
    return mapped


def _map_span(
    span: Any, *, resource: dict[str, Any], scope: dict[str, Any], service: str
) -> tuple[SpanRow | None, str]:
    trace_id = _hex_id(span.trace_id, 16)
    if trace_id is None:
        return None, "invalid trace_id (must be 16 bytes, not all zero)"
    span_id = _hex_id(span.span_id, 8)
    if span_id is None:
        return None, "invalid span_id (must be 8 bytes, not all zero)"
    parent = b"" if not any(span.parent_span_id) else span.parent_span_id
    parent_span_id = _hex_id(parent, 8) if parent else ""
    if parent_span_id is None:
        return None, "invalid parent_span_id (must be empty or 8 bytes)"
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if not 0 < start <= MAX_INT64 or not 0 < end <= MAX_INT64:
        return None, "missing or out-of-range start or end time"
    if end < start:
        return None, "time_order: end time before start time"
    cut = _Cut()
    events = []
    for event in span.events[:MAX_EVENTS]:
        events.append(
            {
                "name": _text(event.name, cut, 256),
                "time_ns": min(event.time_unix_nano, MAX_INT64),
                "attributes": _attributes(event.attributes, cut),
            }
        )
    links = []
    for link in span.links[:MAX_LINKS]:
        links.append(
            {
                "trace_id": link.trace_id.hex(),
                "span_id": link.span_id.hex(),
                "attributes": _attributes(link.attributes, cut),
            }
        )
    if len(span.events) > MAX_EVENTS or len(span.links) > MAX_LINKS:
        cut.truncated = True
    row = SpanRow(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        trace_state=_text(span.trace_state, cut, 512),
        name=_text(span.name, cut, 256),
        kind=span.kind if 0 <= span.kind <= 5 else 0,
        start_ns=start,
        end_ns=end,
        status_code=span.status.code if 0 <= span.status.code <= 2 else 0,
        status_message=_text(span.status.message, cut, 1024),
        service=service,
        attributes=_attributes(span.attributes, cut),
        resource=resource,
        scope=scope,
        events=events,
        links=links,
    )
    row.dropped_attributes = cut.dropped
    row.truncated = cut.truncated
    return row, ""
