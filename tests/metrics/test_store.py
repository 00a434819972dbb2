"""The metric store's write path: points packed as binary COPY rows read back as sent,
a retry (or the same point twice) stored once on every path, series known to the
process and new ones in one request, and nothing of a request that fails."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from rumserver.ingest.otlp import point_rows
from rumserver.ingest.otlp.metric_store import SERIES_IDS
from rumserver.models import MetricDirty, MetricPoint
from tests import factories
from tests.metrics.stored import stored_points
from tests.metrics.test_receiver import post, vllm_request
from tests.otlp.builders import kv
from tests.otlp.test_receiver import JSON

NOW_NS = time.time_ns()
MINUTE_NS = 60 * 10**9


def test_each_kind_of_row_reads_back_as_packed():
    t, s = NOW_NS, NOW_NS - 10**9
    bounds, counts = point_rows.jsonb(b"[0.1,0.5]"), point_rows.jsonb(b"[4,5,1]")
    rows = {
        "double": point_rows.double_row(t, 7, s, 0.42, 0),
        "flagged": point_rows.double_row(t, 7, s, float("nan"), 1),
        "int": point_rows.int_row(t, 8, s, 2**53 + 1, 0),
        "stale": point_rows.no_value_row(t, 9, 0, 1),
        "histogram": point_rows.histogram_row(t, 10, s, 10, 2.5, None, 0.9, bounds, counts, 0),
    }
    decoded = {name: point_rows.decode(row) for name, row in rows.items()}
    none7 = (None,) * 7
    assert decoded["double"] == (t, 7, s, 0.42, *none7, 0)
    assert decoded["flagged"][-1] == 1 and decoded["flagged"][3] != decoded["flagged"][3]
    assert decoded["int"] == (t, 8, s, float(2**53 + 1), 2**53 + 1, *none7[:6], 0)
    assert decoded["stale"] == (t, 9, 0, *(None,) * 8, 1)
    assert decoded["histogram"] == (
        t, 10, s, None, None, 10, 2.5, None, 0.9, "[0.1,0.5]", "[4,5,1]", 0,
    )  # fmt: skip
    assert point_rows.decode(point_rows.with_series(rows["double"], 99))[1] == 99


def test_rows_sort_as_their_keys():
    keys = [(NOW_NS + 1, 3), (NOW_NS, 2**40), (NOW_NS, 5), (1, 2**62), (NOW_NS + 1, 1)]
    rows = [point_rows.double_row(t, series, 0, 1.0, 0) for t, series in keys]
    assert [point_rows.decode(row)[:2] for row in sorted(rows)] == sorted(keys)


def _scrape(time_ns: int, *gpus: str) -> bytes:
    request = ExportMetricsServiceRequest()
    resource_metrics = request.resource_metrics.add()
    resource_metrics.resource.attributes.extend([kv("service.name", "dcgm")])
    metric = resource_metrics.scope_metrics.add().metrics.add(name="DCGM_FI_DEV_GPU_UTIL")
    for n, gpu in enumerate(gpus):
        metric.gauge.data_points.add(
            time_unix_nano=time_ns, as_double=float(n), attributes=[kv("gpu", gpu)]
        )
    return request.SerializeToString()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_known_and_new_series_in_one_request_and_a_retry_outside_any_transaction():
    """Committed requests (no test transaction around them): the series ids are kept by
    the process, the next request mixes them with a new series, and its retry goes
    through the temporary table."""
    created = factories.make_app()
    client, token = Client(), created.ingest_token
    assert post(client, _scrape(NOW_NS, "0", "1"), token=token).status_code == 200
    known = SERIES_IDS.of(created.application.pk)
    assert sum(len(ids) for ids in known.values()) == 2
    body = _scrape(NOW_NS + 15 * 10**9, "0", "1", "2")  # gpu 2 is new
    for _ in range(2):  # the export, then its retry
        r = post(client, body, token=token)
        assert r.status_code == 200 and r.content == b""
    points = stored_points()
    assert sorted((p.attributes["gpu"], p.time_ns, p.value) for p in points) == [
        ("0", NOW_NS, 0.0), ("0", NOW_NS + 15 * 10**9, 0.0),
        ("1", NOW_NS, 1.0), ("1", NOW_NS + 15 * 10**9, 1.0),
        ("2", NOW_NS + 15 * 10**9, 2.0),
    ]  # fmt: skip
    assert sum(len(ids) for ids in SERIES_IDS.of(created.application.pk).values()) == 3
    # Both minutes and their hour are marked for the rollups, once each.
    minutes = {t - t % MINUTE_NS for t in (NOW_NS, NOW_NS + 15 * 10**9)}
    assert set(MetricDirty.objects.filter(seconds=60).values_list("start_ns", flat=True)) == (
        minutes
    )


@pytest.mark.django_db(transaction=True)
def test_the_same_point_twice_in_one_request_is_one_row():
    created = factories.make_app()
    point = {"timeUnixNano": str(NOW_NS), "asDouble": 1.5}
    body = json.dumps(
        {"resourceMetrics": [{"scopeMetrics": [{"metrics": [
            {"name": "g", "gauge": {"dataPoints": [point, point]}},
        ]}]}]}
    ).encode()  # fmt: skip
    r = post(Client(), body, token=created.ingest_token, content_type=JSON)
    assert r.status_code == 200 and json.loads(r.content) == {}
    assert [(p.name, p.value) for p in stored_points()] == [("g", 1.5)]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_export_land_once():
    """Two workers with the same export at the same time: one COPYs, the other waits
    for it on the key and then writes through the temporary table; both answer 200."""
    created = factories.make_app()
    body = vllm_request(time_ns=NOW_NS).SerializeToString()
    start = threading.Barrier(4)

    def export(_: int) -> int:
        try:
            start.wait()  # all four posts at once
            return post(Client(), body, token=created.ingest_token).status_code
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(export, range(4)))
    assert statuses == [200] * 4
    assert MetricPoint.objects.count() == 5
