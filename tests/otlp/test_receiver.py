"""POST /v1/traces answers as the OTLP spec says, and refused input leaves nothing."""

from __future__ import annotations

import gzip
import io
import json
import secrets
import time
import zlib

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from correlator.models import Trace
from rumserver.models import Application, BrowserEvent, DirtyTrace, Span
from tests import factories
from tests.otlp import builders

PB = "application/x-protobuf"
JSON = "application/json"


@pytest.fixture
def app(db):
    return factories.make_app()


def post(client, body: bytes, *, token: str | None, content_type: str = PB, **headers):
    extra = {"CONTENT_TYPE": content_type, **headers}  # kept even for an empty body
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.generic("POST", "/v1/traces", body, content_type=content_type, **extra)


def status_of(response) -> status_pb2.Status:
    if response["Content-Type"] == PB:
        return status_pb2.Status.FromString(response.content)
    data = json.loads(response.content)
    return status_pb2.Status(code=data["code"], message=data["message"])


def assert_nothing_stored() -> None:
    assert (Span.objects.count(), DirtyTrace.objects.count()) == (0, 0)


def test_a_protobuf_request_is_stored_and_answered_with_an_empty_response(client, app):
    req = builders.request([builders.span(), builders.span()])
    r = post(client, req.SerializeToString(), token=app.ingest_token)
    assert r.status_code == 200
    assert r["Content-Type"] == PB
    assert r.content == b""  # ExportTraceServiceResponse with partial_success unset
    assert Span.objects.count() == 2 and DirtyTrace.objects.count() == 2


def test_gzip_protobuf(client, app):
    body = gzip.compress(builders.request([builders.span()]).SerializeToString())
    r = post(client, body, token=app.ingest_token, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 200 and Span.objects.count() == 1


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_otlp_json_keeps_hex_ids_exact(client, app, compress):
    trace_id, span_id, parent = secrets.token_hex(16), secrets.token_hex(8), secrets.token_hex(8)
    body = builders.otlp_json(trace_id.upper(), span_id, parent)  # hex is case-insensitive
    extra = {"HTTP_CONTENT_ENCODING": "gzip"} if compress else {}
    r = post(client, gzip.compress(body) if compress else body, token=app.ingest_token,
             content_type=JSON, **extra)  # fmt: skip
    assert r.status_code == 200, r.content
    assert r["Content-Type"] == JSON and json.loads(r.content) == {}
    stored = Span.objects.get()
    assert (stored.trace_id, stored.span_id, stored.parent_span_id) == (trace_id, span_id, parent)
    assert stored.attributes == {
        "http.status_code": 200, "gen_ai.request.model": "m", "ok": True, "list": ["a", 1.5],
    }  # fmt: skip
    assert stored.status_code == 1 and stored.kind == 2
    assert stored.scope["name"] == "@opentelemetry/instrumentation-fetch"


def test_bad_spans_are_refused_alone_with_partial_success(client, app):
    good = builders.span()
    spans = [
        good,
        builders.span(trace_id=bytes(16)),  # all-zero trace id
        builders.span(trace_id=b"\x01" * 12),  # wrong length
        builders.span(span_id=bytes(8)),
        builders.span(parent=b"\x01\x02"),
        builders.span(start_ns=0),
        builders.span(duration_ns=-5),
    ]
    r = post(client, builders.request(spans).SerializeToString(), token=app.ingest_token)
    assert r.status_code == 200
    answer = ExportTraceServiceResponse.FromString(r.content)
    assert answer.partial_success.rejected_spans == 6
    message = answer.partial_success.error_message
    for reason in (
        "invalid trace_id",
        "invalid span_id",
        "invalid parent_span_id",
        "missing or out-of-range start or end time",
        "time_order: end time before start time",
    ):
        assert reason in message  # fmt: skip
    assert list(Span.objects.values_list("span_id", flat=True)) == [good.span_id.hex()]
    assert list(DirtyTrace.objects.values_list("trace_id", flat=True)) == [good.trace_id.hex()]


def test_malformed_json_ids_are_refused_per_span(client, app):
    body = builders.otlp_json("zz" * 16, secrets.token_hex(8))
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 200
    assert json.loads(r.content)["partialSuccess"]["rejectedSpans"] == "1"
    assert_nothing_stored()


def test_a_span_sent_twice_is_stored_once(client, app):
    body = builders.request([builders.span()]).SerializeToString()
    assert post(client, body, token=app.ingest_token).status_code == 200
    assert post(client, body, token=app.ingest_token).status_code == 200
    assert Span.objects.count() == 1


def test_ten_thousand_attributes_keep_128_and_count_the_rest(client, app):
    attributes = {f"attr.{i}": i for i in range(10_000)}
    body = builders.request([builders.span(attributes=attributes)]).SerializeToString()
    r = post(client, body, token=app.ingest_token)
    assert r.status_code == 200
    stored = Span.objects.get()
    assert len(stored.attributes) == 128 and stored.dropped_attributes == 10_000 - 128
    assert stored.attributes["attr.0"] == 0


def test_long_values_are_cut_and_nul_removed(client, app):
    attributes = {"big": "x" * 100_000, "nul": "a\x00b", "nan": float("nan")}
    body = builders.request([builders.span(attributes=attributes, name="n\x00ame")])
    r = post(client, body.SerializeToString(), token=app.ingest_token)
    assert r.status_code == 200, r.content
    stored = Span.objects.get()
    assert len(stored.attributes["big"]) == 8192 and stored.truncated
    assert stored.attributes["nul"] == "ab" and stored.name == "name"
    assert stored.attributes["nan"] == "nan"


def test_prompt_and_completion_content_is_dropped_unless_opted_in(client, app):
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.input.messages": '[{"role":"user","parts":[{"content":"my SSN is ..."}]}]',
        "gen_ai.output.messages": "[...]",
        "gen_ai.prompt.0.content": "hello",
        "gen_ai.system_instructions": "be nice",
    }
    s = builders.span(attributes=attributes, kind=3)
    event = s.events.add(name="gen_ai.user.message", time_unix_nano=s.start_time_unix_nano)
    event.attributes.append(builders.kv("content", "secret prompt"))
    post(client, builders.request([s]).SerializeToString(), token=app.ingest_token)
    stored = Span.objects.get()
    assert stored.attributes == {"gen_ai.operation.name": "chat", "llmrum.content_dropped": 5}
    assert stored.events[0]["name"] == "gen_ai.user.message"
    assert stored.events[0]["attributes"] == {}

    Application.objects.filter(pk=app.application.pk).update(store_content=True)
    s2 = builders.span(attributes=attributes, kind=3)
    post(client, builders.request([s2]).SerializeToString(), token=app.ingest_token)
    kept = Span.objects.get(span_id=s2.span_id.hex())
    assert kept.attributes["gen_ai.prompt.0.content"] == "hello"


def stitched_roles() -> dict[str, str]:
    """Each span's role (by span id) once the stitch has decided them."""
    call_command("stitch", "--finalize-all", stdout=io.StringIO())
    traces = {t.trace_id: t for t in Trace.objects.all()}
    return {s.span_id: traces[s.trace_id].role_of(s) for s in Span.objects.exclude(role="browser")}


def test_gen_ai_attributes_fill_typed_columns_and_the_stitch_decides_roles(client, app):
    trace_id = secrets.token_bytes(16)
    vllm = builders.span(
        trace_id=trace_id, name="llm_request",
        attributes={"gen_ai.latency.time_to_first_token": 0.21,
                    "gen_ai.latency.time_in_queue": 0.05, "gen_ai.usage.prompt_tokens": 100,
                    "gen_ai.usage.completion_tokens": 20, "gen_ai.response.model": "llama"},
    )  # fmt: skip
    post(
        client, builders.request([vllm], service="vllm").SerializeToString(), token=app.ingest_token
    )
    client_span = builders.span(
        trace_id=trace_id, kind=3, name="chat gpt-4o",
        attributes={"gen_ai.provider.name": "openai", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.response.time_to_first_chunk": 0.4, "gen_ai.usage.input_tokens": 9,
                    "gen_ai.usage.output_tokens": 3, "gen_ai.conversation.id": "conv-9"},
    )  # fmt: skip
    pinned = builders.span(trace_id=trace_id, name="rag lookup")
    post(client, builders.request([client_span], service="gateway").SerializeToString(),
         token=app.ingest_token)  # fmt: skip
    post(client, builders.request([pinned], service="retriever",
                                  resource={"llmrum.role": "gateway"}).SerializeToString(),
         token=app.ingest_token)  # fmt: skip
    model = Span.objects.get(name="llm_request")
    assert (model.ttft_s, model.ttft_source, model.queue_s) == (
        0.21, "gen_ai.latency.time_to_first_token", 0.05)  # fmt: skip
    assert (model.input_tokens, model.output_tokens, model.response_model) == (100, 20, "llama")
    gw = Span.objects.get(name="chat gpt-4o")
    assert (gw.gen_ai_provider, gw.request_model, gw.conversation_id) == (
        "openai",
        "gpt-4o",
        "conv-9",
    )
    assert (gw.ttft_s, gw.ttft_source) == (0.4, "gen_ai.response.time_to_first_chunk")
    assert (gw.input_tokens, gw.output_tokens) == (9, 3)
    # Ingest decides no role (every stored span keeps the column's default); the stitch
    # does, per service: a model server's SERVER span, a pinned resource, and a GenAI
    # client span alone (no browser span to be the gateway of) is a service.
    assert set(Span.objects.values_list("role", flat=True)) == {"service"}
    roles = stitched_roles()
    assert roles[model.span_id] == "model"
    assert roles[gw.span_id] == "service"
    assert roles[Span.objects.get(name="rag lookup").span_id] == "gateway"  # llmrum.role wins


def test_an_empty_request_is_200(client, app):
    # An empty ExportTraceServiceRequest is zero bytes of protobuf: a valid no-op.
    assert post(client, b"", token=app.ingest_token).status_code == 200
    r = post(client, builders.request([]).SerializeToString(), token=app.ingest_token)
    assert r.status_code == 200 and r.content == b""
    assert post(client, b"{}", token=app.ingest_token, content_type=JSON).status_code == 200
    assert post(client, b"", token=app.ingest_token, content_type=JSON).status_code == 400
    assert_nothing_stored()


# --- error answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "missing ingest token"), ("it_wrong", "unknown ingest token"), ("", "missing")],
)
def test_a_missing_or_wrong_token_is_401(client, app, token, message):
    body = builders.request([builders.span()]).SerializeToString()
    r = post(client, body, token=token)
    assert r.status_code == 401
    assert r["WWW-Authenticate"].startswith("Bearer")
    status = status_of(r)
    assert status.code == 16 and message in status.message
    assert_nothing_stored()


def test_a_rotated_token_stops_working(client, app):
    from rumserver.applications import application_rotate_token

    body = builders.request([builders.span()]).SerializeToString()
    rotated = application_rotate_token(slug=app.application.slug)
    assert post(client, body, token=app.ingest_token).status_code == 401
    assert post(client, body, token=rotated.ingest_token).status_code == 200


def test_a_truncated_protobuf_is_400(client, app):
    body = builders.request([builders.span(), builders.span()]).SerializeToString()
    r = post(client, body[: len(body) - 7], token=app.ingest_token)
    assert r.status_code == 400
    status = status_of(r)
    assert status.code == 3 and "not a valid ExportTraceServiceRequest" in status.message
    assert_nothing_stored()


@pytest.mark.parametrize(
    "body", [b"{not json", b"[1, 2]", b'{"resourceSpans": "nope"}'], ids=["junk", "array", "type"]
)
def test_bad_json_is_400_in_json(client, app, body):
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 400 and r["Content-Type"] == JSON
    assert json.loads(r.content)["code"] == 3
    assert_nothing_stored()


def test_deeply_nested_json_is_400(client, app):
    body = b'{"resourceSpans": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 400
    assert_nothing_stored()


def test_a_gzip_bomb_is_413(client, app):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    wire = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(40)) + compressor.flush()
    with override_settings(LLMRUM_OTLP_MAX_BODY_BYTES=8 * 1024 * 1024):
        r = post(client, wire, token=app.ingest_token, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 413
    assert "inflates to more than" in status_of(r).message
    assert_nothing_stored()


@override_settings(LLMRUM_OTLP_MAX_WIRE_BYTES=10_000)
def test_a_body_over_the_wire_limit_is_413(client, app):
    spans = [builders.span(attributes={"pad": "p" * 500}) for _ in range(40)]
    r = post(client, builders.request(spans).SerializeToString(), token=app.ingest_token)
    assert r.status_code == 413
    assert_nothing_stored()


@override_settings(LLMRUM_OTLP_MAX_SPANS=3)
def test_too_many_spans_is_413(client, app):
    spans = [builders.span() for _ in range(4)]
    r = post(client, builders.request(spans).SerializeToString(), token=app.ingest_token)
    assert r.status_code == 413
    assert status_of(r).message == "at most 3 spans a request, got 4"
    assert_nothing_stored()


def test_other_content_types_are_415(client, app):
    r = post(client, b"x", token=app.ingest_token, content_type="text/plain")
    assert r.status_code == 415
    assert "application/x-protobuf" in status_of(r).message
    assert_nothing_stored()


@override_settings(LLMRUM_OTLP_RATE_LIMIT=1.0)
def test_over_the_rate_is_429_with_retry_after(client, app):
    body = builders.request([builders.span()]).SerializeToString()
    statuses = [post(client, body, token=app.ingest_token).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = post(client, body, token=app.ingest_token)
    assert r.status_code == 429 and int(r["Retry-After"]) >= 1
    assert status_of(r).code == 8


def test_get_is_405(client, app):
    assert client.get("/v1/traces").status_code == 405


@pytest.mark.django_db(transaction=True)
@override_settings(LLMRUM_APP_CACHE_SECONDS=60)
def test_a_failing_write_is_503_and_stores_nothing(client):
    created = factories.make_app()
    body = builders.request([builders.span(), builders.span()]).SerializeToString()
    assert post(client, body, token=created.ingest_token).status_code == 200
    Application.objects.filter(pk=created.application.pk).delete()  # cached, then gone
    r = post(client, builders.request([builders.span()]).SerializeToString(),
             token=created.ingest_token)  # fmt: skip
    assert r.status_code == 503 and r["Retry-After"] == "5"
    assert status_of(r).code == 14
    assert_nothing_stored()


def test_a_server_span_under_a_stored_browser_turn_makes_its_service_the_gateway(client, app):
    turn = factories.turn_event()
    beacon = client.generic(
        "POST", f"/rum/v1/beacon?key={app.application.public_key}",
        factories.encode(factories.batch([turn])), content_type="text/plain",
    )  # fmt: skip
    assert beacon.status_code == 202
    trace_id = bytes.fromhex(turn["trace_id"])
    server = builders.span(trace_id=trace_id, parent=bytes.fromhex(turn["span_id"]))
    llm_call = builders.span(
        trace_id=trace_id, parent=server.span_id, kind=3, name="chat gpt-4o",
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o"},
    )  # fmt: skip
    elsewhere = builders.span(parent=b"\x07" * 8)  # a remote parent that is no browser turn
    body = builders.request([server, llm_call, elsewhere], service="chat-gateway")
    with CaptureQueriesContext(connection) as queries:
        assert post(client, body.SerializeToString(), token=app.ingest_token).status_code == 200
    # Ingest reads nothing for the roles (the stitch decides them).
    event_table = BrowserEvent._meta.db_table
    assert not [q["sql"] for q in queries.captured_queries if event_table in q["sql"]]
    roles = stitched_roles()
    assert roles[llm_call.span_id.hex()] == "gateway"  # every span of the gateway service
    assert roles[server.span_id.hex()] == "gateway"
    assert roles[elsewhere.span_id.hex()] == "service"


# --- no 500 for any body: surrogates, bad UTF-8, wrong types, bad protobuf ----------------


def _json_span(**fields) -> dict:
    now = time.time_ns()
    return {"traceId": secrets.token_hex(16), "spanId": secrets.token_hex(8), "name": "s",
            "kind": 2, "startTimeUnixNano": str(now - 10**9), "endTimeUnixNano": str(now),
            **fields}  # fmt: skip


def _json_request(*spans: dict, resource: list | None = None) -> bytes:
    resource = resource or [{"key": "service.name", "value": {"stringValue": "gw"}}]
    body = {"resourceSpans": [{"resource": {"attributes": resource},
                               "scopeSpans": [{"spans": list(spans)}]}]}  # fmt: skip
    return json.dumps(body).encode()


def _attr(key: str, value: dict) -> dict:
    return {"key": key, "value": value}


SURROGATE = "body has a lone UTF-16 surrogate (\\uD800-\\uDFFF escape)"
BAD_JSON_BODIES = [
    ("lone surrogate key", b'{"resourceSpans": [{"\\ud800": 1}]}', SURROGATE),
    ("surrogate enum", _json_request(_json_span(kind="\udfff")), SURROGATE),
    ("surrogate attribute key", _json_request(_json_span(attributes=[_attr("\udc00", {})])),
     SURROGATE),
    ("surrogate value", _json_request(_json_span(name="cut \ud83d")), SURROGATE),
    ("utf-8 encoded surrogate", b'{"resourceSpans": [], "x": "\xed\xa0\x80"}',
     "body is not valid UTF-8 (byte 28)"),
    ("invalid utf-8", b'{"resourceSpans": [{"\xff": 1}]}', "body is not valid UTF-8 (byte 21)"),
    ("utf-16", json.dumps({"resourceSpans": []}).encode("utf-16"),
     "body is not valid UTF-8 (byte 0)"),
    ("5000 digits", b'{"resourceSpans": [{"x": ' + b"9" * 5000 + b"}]}",
     "body is not valid OTLP/JSON: a number is too long"),
    ("1e400 enum", _json_request(_json_span()).replace(b'"kind": 2', b'"kind": 1e400'),
     "body is not a valid OTLP/JSON request: a number is out of range"),
    ("NaN time", _json_request(_json_span(startTimeUnixNano=float("nan"))),
     "body is not a valid OTLP/JSON request: Failed to parse"),
    ("attributes a string", _json_request(_json_span(attributes="x")),
     "body is not a valid OTLP/JSON request: Failed to parse"),
    ("spans an object", b'{"resourceSpans": [{"scopeSpans": [{"spans": {"a": 1}}]}]}',
     "body is not a valid OTLP/JSON request: Failed to parse"),
    ("kvlist of ints", _json_request(_json_span(
        attributes=[_attr("k", {"kvlistValue": {"values": [1, 2]}})])),
     "body is not a valid OTLP/JSON request: Failed to parse"),
    ("truncated", _json_request(_json_span())[:-9], "body is not valid JSON: Unterminated string"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "body", "message"), BAD_JSON_BODIES, ids=[b[0] for b in BAD_JSON_BODIES]
)
def test_a_malformed_json_body_is_400_in_json_never_500(client, app, label, body, message):
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 400, r.content
    assert r["Content-Type"] == JSON
    status = json.loads(r.content)
    assert status["code"] == 3 and status["message"].startswith(message), status
    assert_nothing_stored()


def test_escaped_surrogate_pairs_a_bom_and_escaped_backslashes_are_fine(client, app):
    span = _json_span(attributes=[_attr("a", {"stringValue": "rocket 🚀"}),
                                  _attr("b", {"stringValue": "\\ud800 is text"})])  # fmt: skip
    body = b"\xef\xbb\xbf" + _json_request(span)  # json.dumps writes 🚀 as \ud83d\ude80
    assert b"\\ud83d\\ude80" in body and b"\\\\ud800" in body
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 200, r.content
    assert Span.objects.get().attributes == {"a": "rocket 🚀", "b": "\\ud800 is text"}


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _nested(number: int, inner: bytes) -> bytes:
    return _field(number, 2, _varint(len(inner)) + inner)


BAD_PROTOBUF = [
    ("reserved wire type 7", _field(1, 7, b"")),
    ("end group without start", _field(1, 4, b"")),
    ("length past the end", _field(1, 2, b"\x7f") + b"abc"),
    ("bad utf-8 in span name", _nested(1, _nested(2, _nested(2, _nested(5, b"\xff\xfe"))))),
    ("nested past the limit", b"".join([b"\x0a"] * 300)),
    ("garbage", bytes(range(256))),
]


@pytest.mark.parametrize(("label", "body"), BAD_PROTOBUF, ids=[b[0] for b in BAD_PROTOBUF])
def test_a_malformed_protobuf_is_400_in_protobuf(client, app, label, body):
    r = post(client, body, token=app.ingest_token)
    assert r.status_code == 400, r.content
    assert r["Content-Type"] == PB
    status = status_of(r)
    assert status.code == 3
    assert status.message.startswith("body is not a valid ExportTraceServiceRequest")
    assert_nothing_stored()


def test_a_field_with_the_wrong_wire_type_is_skipped_as_unknown(client, app):
    """Protobuf reads a known field number with another wire type as an unknown field:
    the span keeps the fields that were right."""
    span = builders.span(name="chat")
    wrong = _field(1, 0, b"\x07") + _field(5, 5, b"\x00" * 4)  # trace_id, name as numbers
    body = _nested(1, _nested(2, _nested(2, wrong + span.SerializeToString() + wrong)))
    r = post(client, body, token=app.ingest_token)
    assert r.status_code == 200 and r.content == b""
    stored = Span.objects.get()
    assert (stored.trace_id, stored.name) == (span.trace_id.hex(), "chat")


def test_an_error_message_that_is_not_valid_unicode_still_goes_out():
    from rumserver.ingest.otlp import wire as otlp_wire

    wire = otlp_wire.encode_status(otlp_wire.PROTOBUF, code=3, message="bad \ud800 key")
    assert status_pb2.Status.FromString(wire).message == "bad \\ud800 key"
    assert json.loads(otlp_wire.encode_status(JSON, code=3, message="bad \ud800"))["code"] == 3


# --- time sanity: no negative or absurd durations from a span ------------------------------


def test_a_span_ending_before_it_starts_is_refused_in_partial_success_json(client, app):
    good, bad = _json_span(), _json_span()
    bad["endTimeUnixNano"] = str(int(bad["startTimeUnixNano"]) - 1)
    r = post(client, _json_request(good, bad), token=app.ingest_token, content_type=JSON)
    assert r.status_code == 200
    assert json.loads(r.content) == {"partialSuccess": {
        "rejectedSpans": "1", "errorMessage": "1 span(s): time_order: end time before start time"
    }}  # fmt: skip
    assert list(Span.objects.values_list("span_id", flat=True)) == [good["spanId"]]


@pytest.mark.parametrize(
    ("offset_ms", "ttft_s"),
    [(-5, None), (0, 0.0), (120, 0.12), (250, 0.25), (251, None)],
    ids=["before the start", "at the start", "inside", "at the end", "after the end"],
)
def test_a_first_token_event_counts_only_inside_its_span(client, app, offset_ms, ttft_s):
    span = builders.span(duration_ns=250_000_000)
    span.events.add(
        name="first_token", time_unix_nano=span.start_time_unix_nano + offset_ms * 10**6
    )
    r = post(client, builders.request([span]).SerializeToString(), token=app.ingest_token)
    assert r.status_code == 200
    stored = Span.objects.get()
    assert stored.ttft_s == ttft_s
    assert stored.ttft_source == ("event:first_token" if ttft_s is not None else "")
    assert stored.events[0]["name"] == "first_token"  # the event itself is kept either way


def test_absurd_latencies_and_token_counts_stay_out_of_the_typed_columns(client, app):
    """A TTFT or queue time of an hour or more, or a token count past a 32-bit integer,
    is kept as an attribute but never read into a column (where it failed the write)."""
    attributes = {"gen_ai.latency.time_to_first_token": 3600.0,
                  "gen_ai.server.time_to_first_token": 0.3,
                  "gen_ai.latency.time_in_queue": 1e12, "gen_ai.usage.input_tokens": 2**40,
                  "gen_ai.usage.output_tokens": 2**31 - 1, "gen_ai.request.model": "m"}  # fmt: skip
    span = builders.span(attributes=attributes)
    r = post(client, builders.request([span]).SerializeToString(), token=app.ingest_token)
    assert r.status_code == 200, r.content
    stored = Span.objects.get()
    assert (stored.ttft_s, stored.ttft_source) == (0.3, "gen_ai.server.time_to_first_token")
    assert (stored.queue_s, stored.input_tokens, stored.output_tokens) == (None, None, 2**31 - 1)
    assert stored.attributes["gen_ai.usage.input_tokens"] == 2**40
