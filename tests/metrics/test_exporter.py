"""The OpenTelemetry Python SDK's OTLP/HTTP metric exporter (protobuf) against a live
llmrum: what a service's own meters send is stored as sent."""

from __future__ import annotations

import gzip
import http.client
import time
from urllib.parse import urlsplit

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource

from rumserver.models import MetricPoint
from tests import factories
from tests.metrics.stored import stored_points
from tests.metrics.test_receiver import vllm_request

LABELS = {"model_name": "llama-3-8b", "engine": "0"}


def record_vllm_like_metrics() -> MetricsData:
    """One collection of a gauge, a monotonic counter and a histogram, with the SDK's
    default (cumulative) temporality, as a model server's own meters would make it (the
    SDK refuses Prometheus's colons in instrument names, so these are dotted)."""
    reader = InMemoryMetricReader()
    resource = Resource.create({"service.name": "vllm", "service.instance.id": "vllm-0:8000"})
    provider = MeterProvider(resource=resource, metric_readers=[reader])
    meter = provider.get_meter("vllm.metrics", "0.33.0")
    meter.create_gauge("vllm.num_requests_waiting").set(4, LABELS)
    tokens = meter.create_counter("vllm.generation_tokens")
    tokens.add(100, LABELS)
    tokens.add(23, LABELS)
    ttft = meter.create_histogram("vllm.time_to_first_token", unit="s")
    for seconds in (0.02, 0.3, 0.3, 7.0):
        ttft.record(seconds, LABELS)
    data = reader.get_metrics_data()
    provider.shutdown()
    assert data is not None
    return data


def exporter_for(live_server, token: str, **options) -> OTLPMetricExporter:
    return OTLPMetricExporter(
        endpoint=f"{live_server.url}/v1/metrics",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
        **options,
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_sdk_exporter_stores_gauges_sums_and_histograms(live_server, compression):
    app = factories.make_app()
    data = record_vllm_like_metrics()
    exporter = exporter_for(live_server, app.ingest_token, compression=compression)
    assert exporter.export(data) is MetricExportResult.SUCCESS
    # An exporter that timed out after the server committed sends the same batch again.
    assert exporter.export(data) is MetricExportResult.SUCCESS
    exporter.shutdown()

    points = {p.name: p for p in stored_points(app_id=app.application.pk)}
    assert set(points) == {
        "vllm.num_requests_waiting", "vllm.generation_tokens",
        "vllm.time_to_first_token",
    }  # fmt: skip
    for point in points.values():
        assert (point.service, point.instance, point.attributes) == ("vllm", "vllm-0:8000", LABELS)
        assert point.resource["telemetry.sdk.name"] == "opentelemetry"
    waiting = points["vllm.num_requests_waiting"]
    assert (waiting.kind, waiting.value) == (MetricPoint.Kind.GAUGE, 4.0)
    tokens = points["vllm.generation_tokens"]
    assert (tokens.kind, tokens.value, tokens.monotonic, tokens.temporality) == (2, 123.0, True, 2)
    assert 0 < tokens.start_ns <= tokens.time_ns
    ttft = points["vllm.time_to_first_token"]
    sdk_point = next(
        m.data.data_points[0]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "vllm.time_to_first_token"
    )
    assert ttft.bounds == list(sdk_point.explicit_bounds)  # the SDK's default boundaries
    assert ttft.bucket_counts == list(sdk_point.bucket_counts) and sum(ttft.bucket_counts) == 4
    assert (ttft.count, ttft.sum, ttft.min, ttft.max, ttft.unit) == (4, 7.62, 0.02, 7.0, "s")
    assert ttft.time_ns == sdk_point.time_unix_nano


@pytest.mark.django_db(transaction=True)
def test_the_sdk_exporter_with_a_wrong_token_fails_and_stores_nothing(live_server):
    factories.make_app()
    exporter = exporter_for(live_server, "it_not-a-token")
    assert exporter.export(record_vllm_like_metrics()) is MetricExportResult.FAILURE
    exporter.shutdown()
    assert MetricPoint.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_chunked_gzip_body_is_read_like_a_sized_one(live_server):
    """A Collector or JS exporter may stream the body without Content-Length."""
    app = factories.make_app()
    body = gzip.compress(vllm_request(time_ns=time.time_ns()).SerializeToString())
    url = urlsplit(live_server.url)
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    connection.request(
        "POST",
        "/v1/metrics",
        body=iter([body[:100], body[100:]]),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip",
                 "Authorization": f"Bearer {app.ingest_token}"},
        encode_chunked=True,
    )  # fmt: skip
    response = connection.getresponse()
    assert (response.status, response.read()) == (200, b"")
    connection.close()
    assert MetricPoint.objects.count() == 5
