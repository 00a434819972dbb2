"""Seeded generators of hostile ingest bodies for the fuzz test.

Each generator starts from a structurally valid body (a beacon batch, an OTLP/JSON
or an OTLP/protobuf ExportTraceServiceRequest) and mutates it: wrong types at any
depth, lone surrogates in keys and values, huge, negative and non-finite numbers,
bad ids, times out of order, deep nesting; then, on the bytes, invalid UTF-8,
truncation, bit flips, protobuf fields with the wrong wire type, gzip garbage,
chunked framing (whole or broken).

Ids are made from a counter, so that two bodies never share an event or span id
by accident and a 2xx answer can be checked against the rows it added.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

NOW_MS = 1_767_225_600_000.0  # 2026-01-01, inside the beacon's accepted epoch range
NOW_NS = int(NOW_MS) * 1_000_000


@dataclass
class Body:
    data: bytes
    content_type: str
    gzip: bool = False
    # "": sized (Content-Length); "server": chunked, de-chunked by the server
    # (wsgi.input_terminated); "raw": chunked, the framing left to llmrum.
    chunked: str = ""
    # Event ids (beacon) or (trace id, span id) pairs (OTLP) the body meant to send.
    ids: set[Any] = field(default_factory=set)
    note: str = ""


# Stands for an integer of 5,000 digits, which Python's json cannot write.
HUGE_INT = "<huge-int>"


def _evil_string(rng: random.Random) -> str:
    return rng.choice(
        [
            "",
            "\ud800",
            "a\udc00b",
            "\x00",
            "é" * rng.randint(1, 40),
            "x" * rng.choice([1, 65, 513, 2049, 9000]),
            "🚀",
            "0" * 32,
            "f" * 16,
            "NaN",
            "-Infinity",
            "1e999",
            "\\u0000",
            "$ref",
            "\n",
            "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(rng.randint(1, 8))),
        ]
    )


def _nested(rng: random.Random) -> Any:
    depth = rng.choice([10, 60, 70, 120, 500, 3000])
    node: Any = rng.choice([[], {}, 1, "x"])
    for _ in range(depth):
        node = [node] if rng.random() < 0.5 else {"k": node}
    return node


def evil_value(rng: random.Random) -> Any:
    kind = rng.randrange(14)
    if kind == 0:
        return rng.choice([0, -1, 1, 2**31, 2**53 + 1, 2**63, 2**64, -(2**63) - 1, 10**40])
    if kind == 1:
        return rng.choice([0.5, -0.0, -1e-300, 1e308, -1e308, 5e-324, 1e20, -86_400_001.0])
    if kind == 2:
        return rng.choice([float("nan"), float("inf"), float("-inf")])  # bare NaN, Infinity
    if kind == 3:
        return _evil_string(rng)
    if kind == 4:
        return rng.choice([True, False, None])
    if kind == 5:
        return []
    if kind == 6:
        return {}
    if kind == 7:
        return [evil_value(rng) for _ in range(rng.randint(1, 4))]
    if kind == 8:
        return {_evil_string(rng): evil_value(rng) for _ in range(rng.randint(1, 3))}
    if kind == 9:
        return _nested(rng)
    if kind == 10:
        return int("9" * rng.choice([20, 400, 4000])) if rng.random() < 0.7 else HUGE_INT
    if kind == 11:
        return rng.choice(["0", "-5", "18446744073709551616", "1e3", " 12", "0x10"])
    if kind == 12:
        return NOW_MS + rng.uniform(-1e7, 1e7)
    return rng.randint(-(10**6), 10**6)


# --- mutating a JSON tree -----------------------------------------------------------


def _containers(node: Any, out: list[Any], depth: int = 0) -> None:
    if depth > 12:
        return
    if isinstance(node, dict | list):
        out.append(node)
        items = node.values() if isinstance(node, dict) else node
        for child in items:
            _containers(child, out, depth + 1)


def mutate_tree(root: Any, rng: random.Random, count: int) -> None:
    """Change ``count`` places of the tree in place: replace, delete, add keys."""
    for _ in range(count):
        places: list[Any] = []
        _containers(root, places)
        node = rng.choice(places)
        if isinstance(node, dict):
            action = rng.randrange(4)
            if action == 0 or not node:
                key = rng.choice([_evil_string(rng), "unknownField", "type", "id", "v"])
                node[key] = evil_value(rng)
            elif action == 1:
                del node[rng.choice(list(node))]
            else:
                node[rng.choice(list(node))] = evil_value(rng)
        elif node:
            index = rng.randrange(len(node))
            if rng.random() < 0.2:
                del node[index]
            else:
                node[index] = evil_value(rng)
        else:
            node.append(evil_value(rng))


def encode_json(root: Any) -> bytes:
    def default(value: Any) -> Any:
        raise TypeError(type(value))

    text = json.dumps(root, default=default, allow_nan=True, check_circular=False)
    return text.encode("utf-8").replace(f'"{HUGE_INT}"'.encode(), b"9" * 5000)


def _encode_tree(root: Any) -> bytes:
    try:
        return encode_json(root)
    except (RecursionError, ValueError):  # a nest deeper than Python's own encoder goes
        return b'{"v": 1, "events": ' + b"[" * 5000 + b"]" * 5000 + b"}"


# --- mutating bytes -----------------------------------------------------------------

_INVALID_UTF8 = [b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82", b"\x80"]


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    action = rng.randrange(6)
    if not data:
        return rng.choice(_INVALID_UTF8)
    at = rng.randrange(len(data) + 1)
    if action == 0:
        return data[: rng.randrange(len(data))]  # truncated
    if action == 1:
        return data[:at] + rng.choice(_INVALID_UTF8) + data[at:]
    if action == 2:
        flipped = bytearray(data)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if action == 3:
        return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]
    if action == 4:
        return data + data[: rng.randrange(len(data))]  # trailing garbage
    return rng.randbytes(rng.randint(0, 64))


def _framed(body: Body, rng: random.Random) -> Body:
    """Now and then send the body with Transfer-Encoding: chunked, its framing
    de-chunked by the server or left raw (and then sometimes broken)."""
    roll = rng.random()
    if roll < 0.85:
        return body
    if roll < 0.92:
        body.chunked = "server"
        return body
    body.chunked = "raw"
    data, framed = body.data, b""
    while data:
        size = rng.randint(1, max(1, len(data)))
        framed += b"%x\r\n" % size + data[:size] + b"\r\n"
        data = data[size:]
    framed += b"0\r\n\r\n"
    if rng.random() < 0.3:
        framed = mutate_bytes(framed, rng)
        body.note += " chunks-mutated"
    body.data = framed
    return body


def _on_the_wire(body: Body, rng: random.Random) -> Body:
    """Now and then send the body gzip'd, or send gzip garbage; now and then chunked."""
    return _framed(_gzip_or_not(body, rng), rng)


def _gzip_or_not(body: Body, rng: random.Random) -> Body:
    roll = rng.random()
    if roll < 0.75:
        return body
    body.gzip = True
    packed = gzip.compress(body.data, compresslevel=1)
    if roll < 0.87:
        body.data = packed
    elif roll < 0.92:
        body.data = packed[: rng.randrange(len(packed))]  # truncated gzip
        body.note += " gzip-truncated"
    elif roll < 0.96:
        body.data = mutate_bytes(packed, rng)
        body.note += " gzip-mutated"
    else:
        body.data = rng.randbytes(rng.randint(0, 40))
        body.note += " gzip-garbage"
    return body


# --- beacon -------------------------------------------------------------------------


class Generator:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self._ids = itertools.count(1)

    def _id(self, prefix: str) -> str:
        return f"{prefix}{self.seed}-{next(self._ids)}"

    def _hex(self, size: int) -> str:
        return f"{self.seed:08x}{next(self._ids):0{size * 2 - 8}x}"[-size * 2 :]

    # A turn with times in order, or (now and then) out of order or over an hour.
    def _turn(self) -> dict[str, Any]:
        rng = self.rng
        t = NOW_MS - rng.uniform(0, 1e6)
        times = [t, t + rng.uniform(0, 800), 0.0, 0.0, 0.0]
        times[2] = times[1] + rng.uniform(0, 900)
        times[3] = times[2] + rng.uniform(0, 5000)
        times[4] = times[3] + rng.uniform(0, 50)
        names = ["t_send", "t_headers", "t_first_token", "t_last_token", "t_end"]
        event: dict[str, Any] = {
            "type": "turn",
            "id": self._id("t"),
            "ts": times[4],
            "trace_id": self._hex(16),
            "span_id": self._hex(8),
            "conversation_id": "c",
            "turn_index": rng.randint(0, 5),
            "status": 200,
            "chunks": rng.randint(0, 90),
            "tbt_gaps": [rng.uniform(0, 200) for _ in range(rng.randint(0, 6))],
            "tbt_summary": {"count": 5, "p50": 40.0, "p95": 90.0, "max": 120.0},
            "output_tokens": rng.randint(0, 900),
            "usage": {"input_tokens": rng.randint(0, 99), "output_tokens": 7},
            "server_timing": [{"name": "total", "duration": 12.5}],
            "outcome": rng.choice(["completed", "stopped", "abandoned", "error"]),
        }
        for name, value in zip(names, times, strict=True):
            if name == "t_send" or rng.random() < 0.85:
                event[name] = value
        roll = rng.random()
        if roll < 0.1:  # one time before its predecessor, by up to 10 s (or sub-ms jitter)
            name = rng.choice(names[1:])
            if name in event:
                event[name] = event["t_send"] - rng.choice([0.4, 0.99, 1.5, 5000.0])
        elif roll < 0.13:
            event["t_end"] = event["t_send"] + rng.choice([3_599_999.0, 3_600_000.0, 7e6])
        elif roll < 0.16:
            event["tbt_gaps"] = [rng.choice([-1.0, 3_600_000.0, 4e6])]
        return event

    def _event(self) -> dict[str, Any]:
        rng = self.rng
        kind = rng.randrange(6)
        if kind <= 1:
            return self._turn()
        base = {"id": self._id("e"), "ts": NOW_MS - rng.uniform(0, 1e6)}
        if kind == 2:
            return {**base, "type": "action", "name": "stop", "turn_span_id": self._hex(8)}
        if kind == 3:
            return {**base, "type": "feedback", "value": rng.choice(["up", "down", 0.7])}
        if kind == 4:
            return {**base, "type": "vital", "name": "LCP", "value": 1200.0, "delta": 5.0}
        return {**base, "type": "error", "message": "boom", "stack": "at x", "lineno": 3}

    def beacon(self) -> Body:
        rng = self.rng
        events = [self._event() for _ in range(rng.choice([0, 1, 1, 2, 3, 8]))]
        root = {
            "v": 1,
            "sdk": {"name": "llmrum", "version": "0.1.0"},
            "sent_at": NOW_MS,
            "session": {"id": self._id("s"), "started_at": NOW_MS - 60_000},
            "page": {"url": "https://chat.example.com/c/1", "referrer": ""},
            "user": {"id": "u"},
            "events": events,
        }
        return self._mutated(root, "text/plain", "beacon", event_ids)

    def _mutated(
        self, root: Any, content_type: str, label: str, ids_of: Callable[[Any], set[Any]]
    ) -> Body:
        """Mutate a valid tree (or not, a quarter of the time), encode it, now and then
        mutate the bytes too, and gzip it or not."""
        rng = self.rng
        mutations = 0 if rng.random() < 0.25 else rng.choice([1, 1, 1, 2, 3, 6])
        mutate_tree(root, rng, mutations)
        ids = ids_of(root)
        data = _encode_tree(root)
        note = f"{label} mutations={mutations}"
        if rng.random() < 0.2:
            data, note = mutate_bytes(data, rng), note + " bytes"
        return _on_the_wire(Body(data, content_type, ids=ids, note=note), rng)

    # --- OTLP ---------------------------------------------------------------------

    def _any_value(self, depth: int = 0) -> dict[str, Any]:
        rng = self.rng
        kind = rng.randrange(7 if depth < 3 else 5)
        if kind == 0:
            return {"stringValue": rng.choice(["chat", "gpt-4o", "é🚀", "x" * 300])}
        if kind == 1:
            return {"intValue": str(rng.choice([0, 7, -3, 2**40, 2**63 - 1]))}
        if kind == 2:
            return {"doubleValue": rng.choice([0.21, 1.5, -2.0, "NaN", "Infinity"])}
        if kind == 3:
            return {"boolValue": rng.random() < 0.5}
        if kind == 4:
            return {"bytesValue": base64.b64encode(rng.randbytes(6)).decode()}
        if kind == 5:
            return {"arrayValue": {"values": [self._any_value(depth + 1) for _ in range(2)]}}
        return {"kvlistValue": {"values": [{"key": "k", "value": self._any_value(depth + 1)}]}}

    def _attributes(self) -> list[dict[str, Any]]:
        rng = self.rng
        named = [
            ("gen_ai.operation.name", {"stringValue": "chat"}),
            ("gen_ai.request.model", {"stringValue": "llama"}),
            ("gen_ai.usage.input_tokens", {"intValue": str(rng.choice([5, 2**31, 2**40]))}),
            ("gen_ai.usage.output_tokens", {"doubleValue": rng.choice([3.0, 1e300])}),
            ("gen_ai.latency.time_to_first_token", {"doubleValue": rng.choice([0.2, 1e9, -1])}),
            ("gen_ai.latency.time_in_queue", {"doubleValue": rng.choice([0.05, 4000.0])}),
            ("gen_ai.response.time_to_first_chunk", {"intValue": str(rng.choice([1, 2**62]))}),
            ("gen_ai.input.messages", {"stringValue": "[secret]"}),
        ]
        out = [{"key": k, "value": v} for k, v in rng.sample(named, rng.randint(0, 4))]
        out += [{"key": f"a{i}", "value": self._any_value()} for i in range(rng.randint(0, 3))]
        return out

    def _span(self, trace_id: str) -> dict[str, Any]:
        rng = self.rng
        start = NOW_NS - rng.randint(0, 10**12)
        end = start + rng.choice([0, 1, 250_000_000, 10**13])
        if rng.random() < 0.08:
            end = start - rng.randint(1, 10**9)  # ends before it starts
        span: dict[str, Any] = {
            "traceId": trace_id,
            "spanId": self._hex(8),
            "name": "POST /v1/chat/completions",
            "kind": rng.choice([0, 1, 2, 3, "SPAN_KIND_SERVER"]),
            "startTimeUnixNano": str(start),
            "endTimeUnixNano": str(end) if rng.random() < 0.5 else end,
            "attributes": self._attributes(),
            "status": {"code": rng.choice([0, 1, 2]), "message": "ok"},
        }
        if rng.random() < 0.5:
            span["parentSpanId"] = self._hex(8)
        if rng.random() < 0.3:
            offset = rng.choice([-(10**9), 0, 10**8, 10**14])
            span["events"] = [
                {"name": rng.choice(["first_token", "gen_ai.first_token", "exception"]),
                 "timeUnixNano": str(max(0, start + offset)), "attributes": self._attributes()}
            ]  # fmt: skip
        if rng.random() < 0.2:
            span["links"] = [{"traceId": self._hex(16), "spanId": self._hex(8)}]
        return span

    def _otlp_tree(self) -> dict[str, Any]:
        rng = self.rng
        trace_id = self._hex(16)
        spans = [self._span(trace_id) for _ in range(rng.choice([0, 1, 2, 3, 5]))]
        resource = [{"key": "service.name", "value": {"stringValue": rng.choice(["gw", "vllm"])}}]
        if rng.random() < 0.3:
            resource.append({"key": "llmrum.role", "value": {"stringValue": "model"}})
        tree = {
            "resourceSpans": [
                {
                    "resource": {"attributes": resource},
                    "scopeSpans": [{"scope": {"name": "fuzz", "version": "1"}, "spans": spans}],
                }
            ]
        }
        return tree

    def otlp_json(self) -> Body:
        return self._mutated(self._otlp_tree(), "application/json", "otlp-json", span_ids)

    def otlp_protobuf(self) -> Body:
        rng = self.rng
        tree = self._otlp_tree()
        ids = span_ids(tree)
        _hex_ids_to_base64(tree)
        request = json_format.ParseDict(tree, ExportTraceServiceRequest())
        data = request.SerializeToString()
        note = "otlp-protobuf"
        roll = rng.random()
        if roll < 0.3:
            pass
        elif roll < 0.5:
            data = _wrong_wire_type(data, rng)
            note += " wire-type"
        elif roll < 0.6:
            data = _nest_bomb(rng) + data
            note += " nest"
        else:
            data = mutate_bytes(data, rng)
            note += " bytes"
        return _on_the_wire(Body(data, "application/x-protobuf", ids=ids, note=note), rng)

    def score(self) -> Body:
        root = {"trace_id": self._hex(16), "name": "hallucination", "value": 0.3}
        return self._mutated(root, "application/json", "score", lambda root: set())


def _items(node: Any, key: str) -> list[dict[str, Any]]:
    """The dicts in ``node[key]``, whatever a mutation left there."""
    items = node.get(key) if isinstance(node, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def event_ids(root: Any) -> set[Any]:
    """The string ids of the events a mutated beacon still holds."""
    return {e["id"] for e in _items(root, "events") if isinstance(e.get("id"), str)}


def span_ids(tree: Any) -> set[Any]:
    """(trace id, span id) of every span a mutated OTLP/JSON tree still names."""
    ids = set()
    for resource_spans in _items(tree, "resourceSpans"):
        for scope_spans in _items(resource_spans, "scopeSpans"):
            for span in _items(scope_spans, "spans"):
                trace_id, span_id = span.get("traceId"), span.get("spanId")
                if isinstance(trace_id, str) and isinstance(span_id, str):
                    ids.add((trace_id.lower(), span_id.lower()))
    return ids


def _hex_ids_to_base64(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("traceId", "spanId", "parentSpanId") and isinstance(value, str):
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()
            else:
                _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _wrong_wire_type(data: bytes, rng: random.Random) -> bytes:
    """Add fields whose wire type disagrees with the schema (or is reserved), at the
    top level or inside a fresh ResourceSpans / ScopeSpans / Span."""
    field_number = rng.choice([1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 2**29 - 1])
    wire_type = rng.choice([0, 1, 2, 3, 4, 5, 6, 7])
    payload = {
        0: _varint(rng.choice([0, 1, 2**63, 2**64 - 1])),
        1: rng.randbytes(8),
        2: _varint(rng.choice([0, 3, 2**31])) + rng.randbytes(3),
        5: rng.randbytes(4),
    }.get(wire_type, b"")
    bad = _varint(field_number << 3 | wire_type) + payload
    for _ in range(rng.randrange(4)):  # wrap it in fields 1 (ResourceSpans > ScopeSpans > Span)
        bad = b"\x0a" + _varint(len(bad)) + bad
    return data + bad if rng.random() < 0.5 else bad + data


def _nest_bomb(rng: random.Random) -> bytes:
    """AnyValue kvlists nested far past protobuf's recursion limit."""
    depth = rng.choice([50, 101, 400])
    inner = b""
    for _ in range(depth):
        inner = b"\x0a" + _varint(len(inner)) + inner
    return b"\x0a" + _varint(len(inner)) + inner
