"""Fuzzing POST /v1/metrics with hostile bodies (DESIGN.md §10.1), as
tests/rumserver/test_ingest_fuzz.py does /v1/traces: seeded OTLP/JSON and protobuf
metrics requests, mutated at any depth or in their bytes, gzip'd and chunked or not,
through Django's whole request handler. For every body: never a 5xx, the answer in the
request's encoding, a 4xx stores nothing, a 200 stores at most the points it accepted
(fewer only where a point repeats one already stored)."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from django.core.signals import got_request_exception
from django.db import connection
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from prometheus_client import REGISTRY

from rumserver.models import MetricPoint
from tests import factories
from tests.rumserver.fuzz_bodies import NOW_NS, Body, Generator, _on_the_wire, mutate_bytes

# _quiet_4xx_log is a fixture: Django logs every 4xx as a warning.
from tests.rumserver.test_ingest_fuzz import SEED, Poster, _quiet_4xx_log  # noqa: F401

BODIES = int(os.environ.get("LLMRUM_FUZZ_BODIES", "600")) // 2

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_quiet_4xx_log")]


@pytest.fixture
def poster() -> Any:
    poster = Poster()
    got_request_exception.connect(poster.on_exception)
    yield poster
    got_request_exception.disconnect(poster.on_exception)


class MetricsGenerator(Generator):
    """Valid metrics requests of every stored kind (and some not stored), to mutate."""

    def _point(self) -> dict[str, Any]:
        rng = self.rng
        point: dict[str, Any] = {
            "timeUnixNano": str(NOW_NS + next(self._ids)),
            "attributes": [{"key": "model_name", "value": self._any_value()}],
        }
        if rng.random() < 0.5:
            point["startTimeUnixNano"] = str(NOW_NS - rng.choice([0, 10**9, -(10**9)]))
        if rng.random() < 0.1:
            point["flags"] = 1
        return point

    def _metric(self) -> dict[str, Any]:
        rng = self.rng
        points = [self._point() for _ in range(rng.choice([0, 1, 2, 4]))]
        kind = rng.choice(["gauge", "sum", "histogram", "histogram", "summary"])
        for point in points:
            if kind in ("gauge", "sum") and rng.random() < 0.9:
                value = rng.choice([0.42, "NaN", "Infinity", -1.5])
                point.update(
                    rng.choice([{"asDouble": value}, {"asInt": str(rng.choice([7, 2**63 - 1]))}])
                )
            elif kind == "histogram":
                bounds = rng.choice([[], [0.1, 0.5], [0.5, 0.1], [0.1, "Infinity"]])
                counts = [
                    str(rng.randint(0, 9)) for _ in range(len(bounds) + rng.choice([1, 1, 0]))
                ]
                point.update({"count": str(rng.randint(0, 30)), "sum": rng.choice([2.5, "NaN"]),
                              "explicitBounds": bounds, "bucketCounts": counts})  # fmt: skip
        data: dict[str, Any] = {"dataPoints": points}
        if kind in ("sum", "histogram"):
            data["aggregationTemporality"] = rng.choice([0, 1, 2, 7])
        if kind == "sum":
            data["isMonotonic"] = rng.random() < 0.5
        name = rng.choice(
            ["vllm:num_requests_running", "DCGM_FI_DEV_GPU_UTIL", "é🚀", "", "x" * 300]
        )
        return {"name": name, "unit": "s", kind: data}

    def _metrics_tree(self) -> dict[str, Any]:
        rng = self.rng
        resource = [{"key": "service.name", "value": {"stringValue": "vllm"}},
                    {"key": "service.instance.id", "value": self._any_value()}]  # fmt: skip
        metrics = [self._metric() for _ in range(rng.choice([0, 1, 3, 6]))]
        return {"resourceMetrics": [{"resource": {"attributes": resource},
                                     "scopeMetrics": [{"metrics": metrics}]}]}  # fmt: skip

    def metrics_json(self) -> Body:
        return self._mutated(
            self._metrics_tree(), "application/json", "metrics-json", lambda _: set()
        )

    def metrics_protobuf(self) -> Body:
        rng = self.rng
        request = json_format.ParseDict(self._metrics_tree(), ExportMetricsServiceRequest())
        data, note = request.SerializeToString(), "metrics-protobuf"
        if rng.random() < 0.6:
            data, note = mutate_bytes(data, rng), note + " bytes"
        return _on_the_wire(Body(data, "application/x-protobuf", note=note), rng)


def accepted_points() -> float:
    labels = {"outcome": "accepted", "reason": "ok"}
    return REGISTRY.get_sample_value("llmrum_metric_points_total", labels) or 0.0


def stored_points() -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {MetricPoint._meta.db_table}")
        return int(cursor.fetchone()[0])


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_the_metrics_endpoint_answers_every_body_with_a_4xx_or_what_it_stored(
    poster, encoding, settings
):
    settings.LLMRUM_OTLP_RATE_LIMIT = 1e9
    app = factories.make_app()
    generator = MetricsGenerator(SEED + 3)
    make = generator.metrics_json if encoding == "json" else generator.metrics_protobuf
    headers = {"HTTP_AUTHORIZATION": f"Bearer {app.ingest_token}"}
    statuses: dict[int, int] = {}
    for number in range(BODIES):
        body = make()
        before, claimed_before = stored_points(), accepted_points()
        r = poster.post("/v1/metrics", "", body, headers)
        where = f"body #{number} (LLMRUM_FUZZ_SEED={SEED}, {body.note}): {body.data[:300]!r}"
        assert r.status_code in (200, 400, 413, 415), (r.status_code, r.content[:300], where)
        assert r["Content-Type"] == body.content_type, where
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        added, claimed = stored_points() - before, accepted_points() - claimed_before
        if r.status_code != 200:
            if body.content_type == "application/json":
                status = json.loads(r.content)
                status = status_pb2.Status(code=status["code"], message=status["message"])
            else:
                status = status_pb2.Status.FromString(r.content)
            assert status.code == 3 and status.message, where
            assert (added, claimed) == (0, 0), where
            continue
        if body.content_type == "application/json":
            partial = json.loads(r.content).get("partialSuccess", {})
            rejected = int(partial.get("rejectedDataPoints", "0"))
            message = partial.get("errorMessage", "")
        else:
            answer = ExportMetricsServiceResponse.FromString(r.content).partial_success
            rejected, message = answer.rejected_data_points, answer.error_message
        assert (rejected > 0) == bool(message), where
        assert added <= claimed, (added, claimed, where)
    # The mix must reach both outcomes often, or the fuzz tests nothing.
    assert statuses.get(200, 0) > BODIES // 5 and statuses.get(400, 0) > BODIES // 10, statuses
