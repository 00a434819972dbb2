"""POST /v1/metrics answers as /v1/traces does, stores gauges, sums and histograms as
sent, and refused input leaves nothing."""

from __future__ import annotations

import gzip
import json
import time
import zlib

import pytest
from django.test import override_settings
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2

from rumserver.models import Application, MetricPoint
from tests import factories
from tests.metrics.stored import stored_point, stored_points
from tests.otlp.builders import kv
from tests.otlp.test_receiver import JSON, PB, status_of

NOW_NS = time.time_ns()
START_NS = NOW_NS - 60_000_000_000


@pytest.fixture
def app(db):
    return factories.make_app()


def post(client, body: bytes, *, token: str | None, content_type: str = PB, **headers):
    extra = {"CONTENT_TYPE": content_type, **headers}
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client.generic("POST", "/v1/metrics", body, content_type=content_type, **extra)


def assert_nothing_stored() -> None:
    assert MetricPoint.objects.count() == 0


def vllm_request(*, time_ns: int = NOW_NS) -> ExportMetricsServiceRequest:
    """What a Collector's prometheus receiver makes of one vLLM scrape (STANDARDS.md §10.2-3)."""
    labels = [kv("model_name", "llama-3-8b"), kv("engine", "0")]
    running = metrics_pb2.Metric(name="vllm:num_requests_running")
    running.gauge.data_points.add(time_unix_nano=time_ns, as_double=3.0, attributes=labels)
    kv_cache = metrics_pb2.Metric(name="vllm:kv_cache_usage_perc")
    kv_cache.gauge.data_points.add(time_unix_nano=time_ns, as_double=0.42, attributes=labels)
    preemptions = metrics_pb2.Metric(name="vllm:num_preemptions_total")
    preemptions.sum.is_monotonic = True
    preemptions.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    preemptions.sum.data_points.add(
        start_time_unix_nano=START_NS, time_unix_nano=time_ns, as_int=7, attributes=labels
    )
    ttft = metrics_pb2.Metric(name="vllm:time_to_first_token_seconds", unit="s")
    ttft.histogram.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    ttft.histogram.data_points.add(
        start_time_unix_nano=START_NS,
        time_unix_nano=time_ns,
        count=10,
        sum=2.5,
        bucket_counts=[4, 5, 1],
        explicit_bounds=[0.1, 0.5],
        attributes=labels,
    )
    gpu = metrics_pb2.Metric(name="DCGM_FI_DEV_GPU_UTIL")
    gpu.gauge.data_points.add(
        time_unix_nano=time_ns, as_int=87, attributes=[kv("gpu", "0"), kv("Hostname", "node-1")]
    )
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend(
        [kv("service.name", "vllm"), kv("service.instance.id", "vllm-0:8000"),
         kv("server.port", "8000")]
    )  # fmt: skip
    resource_metrics.scope_metrics.add().metrics.extend([running, kv_cache, preemptions, ttft, gpu])
    return request


def test_a_vllm_scrape_is_stored_with_its_values_bounds_and_attributes(client, app):
    r = post(client, vllm_request().SerializeToString(), token=app.ingest_token)
    assert r.status_code == 200 and r["Content-Type"] == PB
    assert r.content == b""  # partial_success unset
    points = {p.name: p for p in stored_points()}
    assert set(points) == {
        "vllm:num_requests_running", "vllm:kv_cache_usage_perc", "vllm:num_preemptions_total",
        "vllm:time_to_first_token_seconds", "DCGM_FI_DEV_GPU_UTIL",
    }  # fmt: skip
    for point in points.values():
        assert (point.app_id, point.service, point.instance) == (
            app.application.pk,
            "vllm",
            "vllm-0:8000",
        )
        assert point.resource == {"server.port": "8000"} and point.time_ns == NOW_NS
    running = points["vllm:num_requests_running"]
    assert (running.kind, running.value, running.monotonic, running.temporality) == (
        1,
        3.0,
        False,
        0,
    )
    assert running.attributes == {"model_name": "llama-3-8b", "engine": "0"}
    assert points["vllm:kv_cache_usage_perc"].value == 0.42
    preemptions = points["vllm:num_preemptions_total"]
    assert (preemptions.kind, preemptions.value, preemptions.monotonic) == (2, 7.0, True)
    assert (preemptions.temporality, preemptions.start_ns) == (2, START_NS)
    ttft = points["vllm:time_to_first_token_seconds"]
    assert (ttft.kind, ttft.count, ttft.sum, ttft.value, ttft.unit) == (3, 10, 2.5, None, "s")
    assert (ttft.bounds, ttft.bucket_counts, ttft.temporality) == ([0.1, 0.5], [4, 5, 1], 2)
    assert (ttft.min, ttft.max) == (None, None)  # not sent
    gpu = points["DCGM_FI_DEV_GPU_UTIL"]
    assert gpu.value == 87.0 and gpu.attributes == {"gpu": "0", "Hostname": "node-1"}


def test_a_retried_export_is_stored_once(client, app):
    body = vllm_request().SerializeToString()
    assert post(client, body, token=app.ingest_token).status_code == 200
    assert post(client, body, token=app.ingest_token).status_code == 200
    assert MetricPoint.objects.count() == 5
    later = vllm_request(time_ns=NOW_NS + 15_000_000_000).SerializeToString()
    assert post(client, later, token=app.ingest_token).status_code == 200
    assert MetricPoint.objects.count() == 10  # the next scrape is new points of the same series
    assert MetricPoint.objects.values("series").distinct().count() == 5


def test_gzip_protobuf(client, app):
    body = gzip.compress(vllm_request().SerializeToString())
    r = post(client, body, token=app.ingest_token, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 200
    assert MetricPoint.objects.count() == 5


def otlp_json(*metrics: dict, resource: list | None = None) -> bytes:
    attributes = resource if resource is not None else [
        {"key": "service.name", "value": {"stringValue": "vllm"}},
        {"key": "service.instance.id", "value": {"stringValue": "vllm-1:8000"}},
    ]  # fmt: skip
    return json.dumps(
        {"resourceMetrics": [
            {"resource": {"attributes": attributes}, "scopeMetrics": [{"metrics": list(metrics)}]}
        ]}
    ).encode()  # fmt: skip


def gauge(name: str, *points: dict) -> dict:
    return {"name": name, "gauge": {"dataPoints": list(points)}}


def test_otlp_json_gauges_sums_and_histograms(client, app):
    trace_id = "5b8efff798038103d269b633813fc60c"
    body = otlp_json(
        gauge(
            "vllm:num_requests_waiting",
            {
                "timeUnixNano": str(NOW_NS),
                "asInt": "2",
                "attributes": [{"key": "model_name", "value": {"stringValue": "m"}}],
            },
        ),
        {
            "name": "vllm:generation_tokens_total",
            "sum": {
                "aggregationTemporality": 2,
                "isMonotonic": True,
                "dataPoints": [
                    {"startTimeUnixNano": START_NS, "timeUnixNano": str(NOW_NS), "asDouble": 1234.0}
                ],
            },
        },
        {
            "name": "vllm:time_to_first_token_seconds",
            "histogram": {
                "aggregationTemporality": 2,
                "dataPoints": [
                    {
                        "timeUnixNano": str(NOW_NS),
                        "count": "3",
                        "sum": 0.9,
                        "min": 0.1,
                        "max": 0.5,
                        "bucketCounts": ["1", "2", "0"],
                        "explicitBounds": [0.25, 1],
                        "exemplars": [
                            {
                                "timeUnixNano": str(NOW_NS),
                                "asDouble": 0.5,
                                "traceId": trace_id,
                                "spanId": "eee19b7ec3c1b174",
                            }
                        ],
                    }
                ],
            },
        },
        gauge("vllm:gpu_cache_usage_perc", {"timeUnixNano": str(NOW_NS), "asDouble": "NaN"}),
        gauge("DCGM_FI_DEV_FB_USED", {"timeUnixNano": NOW_NS, "asDouble": "Infinity"}),
    )
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 200 and r["Content-Type"] == JSON
    assert json.loads(r.content) == {}
    points = {p.name: p for p in stored_points()}
    waiting = points["vllm:num_requests_waiting"]
    assert (waiting.value, waiting.instance, waiting.attributes) == (
        2.0,
        "vllm-1:8000",
        {"model_name": "m"},
    )
    tokens = points["vllm:generation_tokens_total"]
    assert (tokens.value, tokens.monotonic, tokens.temporality, tokens.start_ns) == (
        1234.0,
        True,
        2,
        START_NS,
    )
    ttft = points["vllm:time_to_first_token_seconds"]
    assert (ttft.count, ttft.sum, ttft.min, ttft.max) == (3, 0.9, 0.1, 0.5)
    assert (ttft.bounds, ttft.bucket_counts) == ([0.25, 1.0], [1, 2, 0])
    assert points["vllm:gpu_cache_usage_perc"].value != points[
        "vllm:gpu_cache_usage_perc"
    ].value or (
        points["vllm:gpu_cache_usage_perc"].value is None  # SQLite keeps no NaN
    )
    assert points["DCGM_FI_DEV_FB_USED"].value == float("inf")


def test_bad_points_are_refused_alone_with_partial_success(client, app):
    body = otlp_json(
        gauge("ok", {"timeUnixNano": str(NOW_NS), "asInt": "1"}),
        gauge("no_time", {"asInt": "1"}),
        gauge("no_value", {"timeUnixNano": str(NOW_NS)}),
        gauge("stale", {"timeUnixNano": str(NOW_NS), "flags": 1}),  # kept: a staleness marker
        gauge("backwards", {"startTimeUnixNano": str(NOW_NS + 1), "timeUnixNano": str(NOW_NS),
                            "asInt": "1"}),
        {"name": "bad_buckets", "histogram": {"dataPoints": [
            {"timeUnixNano": str(NOW_NS), "count": "3", "bucketCounts": ["1", "2"],
             "explicitBounds": [1, 2]},
            {"timeUnixNano": str(NOW_NS), "count": "3", "bucketCounts": ["1", "2", "0"],
             "explicitBounds": [2, 1]},
        ]}},
        {"name": "summary", "summary": {"dataPoints": [{"timeUnixNano": str(NOW_NS)}]}},
        gauge("", {"timeUnixNano": str(NOW_NS), "asInt": "1"}),
    )  # fmt: skip
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 200
    partial = json.loads(r.content)["partialSuccess"]
    assert partial["rejectedDataPoints"] == "7"
    for reason in ("missing or out-of-range time", "no value", "time_order",
                   "one bucket count more", "finite and increasing", "summary is not stored",
                   "metric name missing"):  # fmt: skip
        assert reason in partial["errorMessage"]
    stored = dict(MetricPoint.objects.values_list("series__name", "flags"))
    assert stored == {"ok": 0, "stale": 1}
    assert stored_point(name="stale").value is None


def test_partial_success_in_protobuf(client, app):
    request = vllm_request()
    request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points.add(as_int=1)
    r = post(client, request.SerializeToString(), token=app.ingest_token)
    response = ExportMetricsServiceResponse.FromString(r.content)
    assert r.status_code == 200 and response.partial_success.rejected_data_points == 1
    assert "missing or out-of-range time" in response.partial_success.error_message
    assert MetricPoint.objects.count() == 5


def test_an_empty_request_is_200(client, app):
    assert post(client, b"", token=app.ingest_token).status_code == 200
    assert post(client, b"{}", token=app.ingest_token, content_type=JSON).status_code == 200
    assert_nothing_stored()


# --- error answers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "message"),
    [(None, "missing ingest token"), ("it_wrong", "unknown ingest token"), ("", "missing")],
)
def test_a_missing_or_wrong_token_is_401(client, app, token, message):
    r = post(client, vllm_request().SerializeToString(), token=token)
    assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Bearer")
    status = status_of(r)
    assert status.code == 16 and message in status.message
    assert_nothing_stored()


def test_a_public_key_is_not_an_ingest_token(client, app):
    r = client.generic("POST", f"/v1/metrics?key={app.application.public_key}",
                       vllm_request().SerializeToString(), content_type=PB)  # fmt: skip
    assert r.status_code == 401 and "missing ingest token" in status_of(r).message
    assert_nothing_stored()


def test_a_truncated_protobuf_is_400(client, app):
    body = vllm_request().SerializeToString()
    r = post(client, body[:-7], token=app.ingest_token)
    assert r.status_code == 400 and r["Content-Type"] == PB
    status = status_of(r)
    assert status.code == 3 and "not a valid ExportMetricsServiceRequest" in status.message
    assert_nothing_stored()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object (ExportMetricsServiceRequest)"),
        (b'{"resourceMetrics": "nope"}', "not a valid OTLP/JSON request"),
        (otlp_json(gauge("g", {"timeUnixNano": str(NOW_NS), "asInt": "seven"})),
         "not a valid OTLP/JSON request"),
        (otlp_json({"name": "h", "histogram": {"dataPoints": [{"bucketCounts": [{"a": 1}]}]}}),
         "not a valid OTLP/JSON request"),
        (otlp_json({"name": "s", "sum": {"isMonotonic": "yes", "dataPoints": []}}),
         "not a valid OTLP/JSON request"),
        (b'{"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "a\\udc00"}]}]}]}',
         "lone UTF-16 surrogate"),
        (b'{"resourceMetrics": [{"\\ud800": 1}]}', "lone UTF-16 surrogate"),
        (b'{"resourceMetrics": [{"resource": "\xff"}]}', "not valid UTF-8"),
        (b'{"resourceMetrics": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    ],
    ids=["junk", "array", "type", "int-string", "bucket-object", "bool-string",
         "lone-low-surrogate", "surrogate-key", "invalid-utf8", "deep"],
)  # fmt: skip
def test_bad_json_is_400_in_json(client, app, body, message):
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 400 and r["Content-Type"] == JSON
    status = status_of(r)
    assert status.code == 3 and message in status.message
    assert_nothing_stored()


def test_a_gzip_bomb_is_413(client, app):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    wire = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(40)) + compressor.flush()
    with override_settings(LLMRUM_OTLP_MAX_BODY_BYTES=8 * 1024 * 1024):
        r = post(client, wire, token=app.ingest_token, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 413 and "inflates to more than" in status_of(r).message
    assert_nothing_stored()


@override_settings(LLMRUM_OTLP_MAX_WIRE_BYTES=10_000)
def test_a_body_over_the_wire_limit_is_413(client, app):
    request = vllm_request()
    gauge_points = request.resource_metrics[0].scope_metrics[0].metrics[0].gauge.data_points
    for i in range(400):
        gauge_points.add(time_unix_nano=NOW_NS + i, as_double=1.0, attributes=[kv("pad", "p" * 20)])
    r = post(client, request.SerializeToString(), token=app.ingest_token)
    assert r.status_code == 413 and "larger than 10000 bytes on the wire" in status_of(r).message
    assert_nothing_stored()


def test_too_many_points_is_413(client, app, monkeypatch):
    monkeypatch.setattr("rumserver.ingest.otlp.metrics.MAX_DATA_POINTS", 4)
    r = post(client, vllm_request().SerializeToString(), token=app.ingest_token)
    assert r.status_code == 413
    assert status_of(r).message == "at most 4 data points a request, got 5"
    assert_nothing_stored()


@pytest.mark.parametrize("content_type", ["text/plain", "application/grpc", ""])
def test_other_content_types_are_415(client, app, content_type):
    r = post(client, b"x", token=app.ingest_token, content_type=content_type)
    assert r.status_code == 415
    assert "application/x-protobuf or application/json" in status_of(r).message
    assert_nothing_stored()


def test_an_unknown_content_encoding_is_415(client, app):
    r = post(client, b"x", token=app.ingest_token, HTTP_CONTENT_ENCODING="br")
    assert r.status_code == 415 and "use gzip" in status_of(r).message
    assert_nothing_stored()


@override_settings(LLMRUM_OTLP_RATE_LIMIT=1.0)
def test_over_the_rate_is_429_with_retry_after(client, app):
    body = vllm_request().SerializeToString()
    statuses = [post(client, body, token=app.ingest_token).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    r = post(client, body, token=app.ingest_token)
    assert r.status_code == 429 and int(r["Retry-After"]) >= 1
    assert status_of(r).code == 8 and "too many requests" in status_of(r).message
    assert MetricPoint.objects.count() == 5  # the two accepted, the same points


def test_get_is_405(client, app):
    r = client.get("/v1/metrics")
    assert r.status_code == 405 and r["Allow"] == "POST"


@pytest.mark.django_db(transaction=True)
@override_settings(LLMRUM_APP_CACHE_SECONDS=60)
def test_a_failing_write_is_503_and_stores_nothing(client):
    created = factories.make_app()
    assert (
        post(client, vllm_request().SerializeToString(), token=created.ingest_token).status_code
        == 200
    )
    Application.objects.filter(pk=created.application.pk).delete()  # cached, then gone
    r = post(client, vllm_request().SerializeToString(), token=created.ingest_token)
    assert r.status_code == 503 and r["Retry-After"] == "5"
    assert status_of(r).code == 14
    assert_nothing_stored()


def test_a_series_is_its_attributes_whatever_their_order(client, app):
    def point_with(*pairs: tuple[str, dict]) -> bytes:
        attributes = [{"key": key, "value": value} for key, value in pairs]
        return otlp_json(gauge("g", {"timeUnixNano": str(NOW_NS), "asInt": "1",
                                     "attributes": attributes}))  # fmt: skip

    a_x, a_y, b_2 = (
        ("a", {"stringValue": "x"}),
        ("a", {"stringValue": "y"}),
        ("b", {"intValue": "2"}),
    )
    for body in (point_with(a_x, b_2), point_with(b_2, a_x), point_with(a_y, b_2)):
        assert post(client, body, token=app.ingest_token, content_type=JSON).status_code == 200
    assert sorted(p.attributes["a"] for p in stored_points()) == ["x", "y"]


def test_metrics_without_points_refuse_nothing(client, app):
    body = otlp_json({"name": "s", "summary": {"dataPoints": []}}, {"name": "", "gauge": {}})
    r = post(client, body, token=app.ingest_token, content_type=JSON)
    assert r.status_code == 200 and json.loads(r.content) == {}
    assert_nothing_stored()


def test_an_integer_point_keeps_its_exact_value_beyond_what_a_float_holds(client, app):
    big = 2**53 + 1  # a float rounds it to 2**53
    body = otlp_json(
        {"name": "requests", "sum": {"isMonotonic": True, "aggregationTemporality": 2,
                                     "dataPoints": [{"timeUnixNano": str(NOW_NS),
                                                     "asInt": str(big)}]}},
        gauge("ratio", {"timeUnixNano": str(NOW_NS), "asDouble": 0.5}),
    )  # fmt: skip
    assert post(client, body, token=app.ingest_token, content_type=JSON).status_code == 200
    requests, ratio = stored_point(name="requests"), stored_point(name="ratio")
    assert (requests.int_value, requests.value) == (big, float(big))
    assert (ratio.int_value, ratio.value) == (None, 0.5)
