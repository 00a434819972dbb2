"""OTLP/HTTP on the wire: request bodies in, responses and error statuses out.

Both encodings of an export request (``ExportTraceServiceRequest`` on
``/v1/traces``, ``ExportMetricsServiceRequest`` on ``/v1/metrics``) become the same
protobuf message, so one mapping per signal serves them. OTLP/JSON is not plain proto3 JSON:
its ids are hex, not base64, and protobuf's JSON parser would silently read a
32-character hex id as 24 bytes of base64 garbage, so ids are rewritten to base64
first (STANDARDS.md §3.3).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from rumserver.ingest.errors import IngestError

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
MEDIA_TYPES = (PROTOBUF, JSON)
MAX_JSON_DEPTH = 64  # AnyValue arrays and kvlists nest; real spans stay far below this

# google.rpc.Code values used in error bodies.
INVALID_ARGUMENT = 3
UNAUTHENTICATED = 16
RESOURCE_EXHAUSTED = 8
UNAVAILABLE = 14


_Request = TypeVar("_Request", bound=Message)


def decode_request(body: bytes, media_type: str) -> ExportTraceServiceRequest:
    return decode_export(body, media_type, ExportTraceServiceRequest)


def decode_export(body: bytes, media_type: str, message: type[_Request]) -> _Request:
    """``body`` as an export request of type ``message``, or an IngestError (400)."""
    name = message.DESCRIPTOR.name
    if media_type == PROTOBUF:
        try:
            return message.FromString(body)
        except (DecodeError, RecursionError, ValueError) as exc:
            raise IngestError(400, f"body is not a valid {name}: {exc}") from None
    try:
        # Strict UTF-8: json.loads(bytes) would guess UTF-16/32 and let encoded
        # surrogates through ("surrogatepass"). A BOM is tolerated, as before.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise IngestError(400, f"body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(text)
    except RecursionError:
        raise IngestError(400, "body is nested too deeply") from None
    except json.JSONDecodeError as exc:
        raise IngestError(400, f"body is not valid JSON: {exc}") from None
    except ValueError:  # Python refuses integers of more than 4300 digits
        raise IngestError(400, "body is not valid OTLP/JSON: a number is too long") from None
    if not isinstance(data, dict):
        raise IngestError(400, f"body must be a JSON object ({name})")
    _hex_ids_to_base64(data, depth=0)
    if _SURROGATE_ESCAPE.search(text) and _has_lone_surrogate(data):
        raise IngestError(400, "body has a lone UTF-16 surrogate (\\uD800-\\uDFFF escape)")
    try:
        return json_format.ParseDict(data, message(), ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise IngestError(400, f"body is not a valid OTLP/JSON request: {exc}") from None
    except OverflowError:  # 1e400 reads as infinity, which no integer or enum field takes
        raise IngestError(
            400, "body is not a valid OTLP/JSON request: a number is out of range"
        ) from None


# A "\\uD800".."\\uDFFF" escape: only these make json.loads return a string that is
# not valid Unicode (a key or enum name holding one crashes protobuf's C parser with
# a SystemError). Pairs (escaped emoji) are fine and only cost the exact check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _has_lone_surrogate(data: Any) -> bool:
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


# Bytes of each id, by the names OTLP/JSON uses and the protobuf field names.
_ID_KEYS = {
    "traceId": 16,
    "spanId": 8,
    "parentSpanId": 8,
    "trace_id": 16,
    "span_id": 8,
    "parent_span_id": 8,
}


def _hex_ids_to_base64(node: Any, *, depth: int) -> None:
    """Rewrite hex ids in place. A malformed id becomes an empty one, which the span
    mapping then rejects with a reason (partial success), instead of sinking the request."""
    if depth > MAX_JSON_DEPTH:
        raise IngestError(400, "body is nested too deeply")
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _ID_KEYS and isinstance(value, str):
                node[key] = _hex_to_base64(value, _ID_KEYS[key])
            elif isinstance(value, dict | list):
                _hex_ids_to_base64(value, depth=depth + 1)
    elif isinstance(node, list):
        for item in node:
            if isinstance(item, dict | list):
                _hex_ids_to_base64(item, depth=depth + 1)


def _hex_to_base64(value: str, size: int) -> str:
    if len(value) != size * 2:
        return ""
    try:
        raw = binascii.unhexlify(value)
    except (binascii.Error, ValueError):
        return ""
    return base64.b64encode(raw).decode()


def encode_response(media_type: str, *, rejected_spans: int = 0, error_message: str = "") -> bytes:
    response = ExportTraceServiceResponse()
    if rejected_spans or error_message:
        response.partial_success.rejected_spans = rejected_spans
        response.partial_success.error_message = error_message
    return _encode_export_response(
        media_type, response, {"rejectedSpans": rejected_spans, "errorMessage": error_message}
    )


def encode_metrics_response(
    media_type: str, *, rejected_data_points: int = 0, error_message: str = ""
) -> bytes:
    """``ExportMetricsServiceResponse`` (STANDARDS.md §10.2)."""
    response = ExportMetricsServiceResponse()
    if rejected_data_points or error_message:
        response.partial_success.rejected_data_points = rejected_data_points
        response.partial_success.error_message = error_message
    partial: dict[str, int | str] = {
        "rejectedDataPoints": rejected_data_points,
        "errorMessage": error_message,
    }
    return _encode_export_response(media_type, response, partial)


def _encode_export_response(
    media_type: str, response: Message, partial: dict[str, int | str]
) -> bytes:
    """An export response, ``partial_success`` set only when something was refused or
    there is a warning; in OTLP/JSON its int64 count is a decimal string."""
    if media_type == PROTOBUF:
        return response.SerializeToString()
    if not any(partial.values()):
        return b"{}"
    as_json = {
        key: str(value) if isinstance(value, int) else value for key, value in partial.items()
    }
    return json.dumps({"partialSuccess": as_json}).encode()


def encode_status(media_type: str, *, code: int, message: str) -> bytes:
    """A ``google.rpc.Status`` (code = 1, message = 2) in the request's encoding.

    Written by hand: the message is two fields, and the class lives in
    googleapis-common-protos, which the receiver does not otherwise need."""
    if media_type != PROTOBUF:
        return json.dumps({"code": code, "message": message}).encode()
    # Messages quote client input; one that is not valid Unicode must still go out.
    text = message.encode("utf-8", "backslashreplace")
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
