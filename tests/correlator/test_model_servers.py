"""GET /api/v1/model-servers and /reports/model-servers/: each model server's vLLM and
DCGM figures per step (gauges averaged, counters as rates across resets) on the same
steps as the client and model TTFT p95; scoped and escaped like every read page."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from correlator.analytics import figures
from correlator.analytics.model_servers import model_server_series
from correlator.stitch.sweep import sweep_run
from rumserver import metric_rollups
from rumserver.models import MetricPoint, MetricRollup, MetricSeries
from tests import factories
from tests.correlator.golden import send_beacon
from tests.reports.conftest import PASSWORD, make_user

pytestmark = pytest.mark.django_db

GAUGE, SUM = MetricPoint.Kind.GAUGE, MetricPoint.Kind.SUM
VLLM, DCGM = "http://vllm-0:8000/metrics", "http://dcgm:9400/metrics"


def _ns(at: datetime) -> int:
    return round(at.timestamp() * 1e9)


def put(app: Any, at: datetime, name: str, value: float, *, kind: int = GAUGE,
        instance: str = VLLM, service: str = "vllm", labels: str = "0") -> None:  # fmt: skip
    """One point of a series, with the marks ingest makes for the rollups."""
    key = hashlib.blake2b(f"{service}{instance}{name}{labels}".encode(), digest_size=16)
    series, _ = MetricSeries.objects.get_or_create(
        app=app, key=key.hexdigest(),
        defaults={"service": service, "instance": instance, "name": name, "kind": kind,
                  "monotonic": kind == SUM, "temporality": 2 if kind == SUM else 0,
                  "attributes": {"engine": labels}, "created_at": timezone.now()},
    )  # fmt: skip
    MetricPoint.objects.create(series=series, time_ns=_ns(at), value=value)
    metric_rollups.mark(app.pk, [_ns(at)])


@pytest.fixture
def window() -> tuple[datetime, datetime]:
    """Three one-minute steps ending a minute ago (beacons need recent times)."""
    since = timezone.now().replace(second=0, microsecond=0) - timedelta(minutes=4)
    return since, since + timedelta(minutes=3)


@pytest.fixture
def served(client: Client, window: tuple[datetime, datetime]) -> Any:
    created = factories.make_app("Served")
    app = created.application
    t0, _ = window
    s = timedelta(seconds=1)
    # Requests running: engine 0 averages 3 in the first minute, engine 1 adds 1.
    put(app, t0, "vllm:num_requests_running", 2)
    put(app, t0 + 30 * s, "vllm:num_requests_running", 4)
    put(app, t0 + 15 * s, "vllm:num_requests_running", 1, labels="1")
    put(app, t0 + 120 * s, "vllm:num_requests_running", 5)
    put(app, t0 - 30 * s, "vllm:num_requests_running", 99)  # before the range: not shown
    put(app, t0 + 10 * s, "vllm_num_requests_waiting", 7)  # OpenMetrics-escaped name
    put(app, t0 + 10 * s, "vllm:gpu_cache_usage_perc", 0.5)  # vLLM before 0.12
    # Generation tokens: 100 before the range, +30 and +60 in minute one (1.5/s); a
    # restart to 10 (+10) then +30 in minute two (40 over 60 s).
    for seconds, value in ((-30, 100), (0, 130), (30, 190), (60, 10), (90, 40)):
        put(app, t0 + seconds * s, "vllm:generation_tokens_total", value, kind=SUM)
    put(app, t0 + 20 * s, "vllm:num_preemptions_total", 3, kind=SUM)  # one sample: no rate
    # GPU use on the DCGM exporter: GPU 0 averages 70, GPU 1 is at 100.
    for seconds, value, gpu in ((130, 80, "0"), (140, 60, "0"), (135, 100, "1")):
        put(app, t0 + seconds * s, "DCGM_FI_DEV_GPU_UTIL", value, instance=DCGM,
            service="dcgm", labels=gpu)  # fmt: skip
    # A turn in the first minute: client TTFT 420.25 ms.
    event = factories.turn_event()
    shift = _ns(t0 + 20 * s) / 1e6 - event["t_send"]
    for key in ("ts", "t_send", "t_headers", "t_first_token", "t_last_token", "t_end"):
        event[key] += shift
    send_beacon(client, app.public_key, factories.batch([event]))
    sweep_run(now=timezone.now(), finalize_all=True)
    other = factories.make_app("Other").application
    put(other, t0, "vllm:num_requests_running", 50, instance="http://other:8000/metrics")
    return created


def get(client: Client, token: str | None, **params: str) -> Any:
    headers = {"HTTP_AUTHORIZATION": f"Token {token}"} if token else {}
    return client.get("/api/v1/model-servers", params, **headers)


def test_the_answer_holds_each_servers_figures_on_the_ttft_steps(client, served, window):
    user = make_user("mona", app=served)
    token = Token.objects.create(user=user).key
    since, until = window
    r = get(client, token, since=since.isoformat(), until=until.isoformat())
    assert r.status_code == 200, r.content
    body = r.json()
    assert body["app"] == served.application.slug and body["step_seconds"] == 60.0
    expected = figures.window_series(
        app=served.application, since=since, until=until, step=timedelta(minutes=1)
    )
    assert [s["client_ttft_p95_ms"] for s in body["steps"]] == [
        p["client_ttft_ms"]["p95"] for p in expected
    ]
    assert [s["client_ttft_p95_ms"] for s in body["steps"]] == [420.25, None, None]
    assert [datetime.fromisoformat(s["since"]) for s in body["steps"]] == [
        since + timedelta(minutes=i) for i in range(3)
    ]
    dcgm, vllm = body["servers"]
    assert (vllm["service"], vllm["instance"]) == ("vllm", VLLM)
    assert vllm["requests_running"] == [4.0, None, 5.0]
    assert vllm["requests_waiting"] == [7.0, None, None]
    assert vllm["kv_cache_usage"] == [0.5, None, None]
    assert vllm["generation_tokens_per_second"] == pytest.approx([1.5, 40 / 60, None])
    assert vllm["generation_tokens_per_second"][2] is None
    assert vllm["preemptions_per_second"] == [None, None, None]
    assert vllm["gpu_utilization_percent"] == [None, None, None]
    assert (dcgm["service"], dcgm["instance"]) == ("dcgm", DCGM)
    assert dcgm["gpu_utilization_percent"] == [None, None, 85.0]


def test_another_teams_application_is_not_found_and_anonymous_is_refused(client, served):
    outsider = make_user("otto", app=factories.make_app("Elsewhere"))
    token = Token.objects.create(user=outsider).key
    assert get(client, token, app=served.application.slug).status_code == 404
    assert get(client, None, app=served.application.slug).status_code == 401
    assert get(client, token, since="2026-01-01T00:00:00Z", until="2027-06-01T00:00:00Z").json()[
        "since"
    ]  # more than 400 days: refused with a reason


def test_the_page_draws_every_server_and_escapes_a_hostile_service_name(client, served, window):
    hostile = '<script>alert("x")</script>'
    t0, _ = window
    put(served.application, t0 + timedelta(seconds=5), "vllm:num_requests_waiting", 2,
        service=hostile, instance='"><img src=x onerror=alert(1)>')  # fmt: skip
    make_user("paula", app=served)
    assert client.login(username="paula", password=PASSWORD)
    r = client.get("/reports/model-servers/", {"app": served.application.slug, "range": "1h"})
    assert r.status_code == 200
    html = r.content.decode()
    assert hostile not in html and "<img src=x" not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert html.count('class="model-server"') == 3
    assert "Time to first token p95: client and model" in html
    assert 'aria-current="page">Model servers</a>' in html
    assert "Requests running and waiting" in html and "KV-cache and GPU use" in html


def test_rollups_answer_as_the_points_do_over_two_days_even_for_a_late_point():
    """Over 48 hours (one-hour steps) the answer reads hour and minute rollups on
    PostgreSQL; it equals the answer read from the points (a range that does not start
    on a minute), also after a point arrives late in an hour already rolled up."""
    app = factories.make_app("Rolled").application
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    since = hour - timedelta(hours=48) + timedelta(minutes=7)
    until = since + timedelta(hours=48)
    start = since + timedelta(hours=20, seconds=7)  # 3 hours from hh:07:07: 4 clock hours
    running = MetricSeries.objects.create(
        app=app, key="r", service="vllm", instance=VLLM, name="vllm:num_requests_running",
        kind=GAUGE, created_at=timezone.now(),
    )  # fmt: skip
    tokens = MetricSeries.objects.create(
        app=app, key="t", service="vllm", instance=VLLM, name="vllm:generation_tokens_total",
        kind=SUM, monotonic=True, temporality=2, created_at=timezone.now(),
    )  # fmt: skip
    points, total = [], 0.0
    for i in range(4 * 60 * 3):  # three hours of 15-second samples, a gap in the middle
        if 300 <= i < 330:
            continue
        at = _ns(start + timedelta(seconds=15 * i))
        total = 5.0 if i == 400 else total + (i % 7)  # a restart at sample 400
        points += [MetricPoint(series=running, time_ns=at, value=float(i % 11)),
                   MetricPoint(series=tokens, time_ns=at, value=total)]  # fmt: skip
    MetricPoint.objects.bulk_create(points)
    metric_rollups.mark(app.pk, [p.time_ns for p in points])
    rolls = metric_rollups.kept()  # PostgreSQL: SQLite reads points either way
    assert (metric_rollups.refresh_all() > 0) == rolls  # what beat runs every minute

    def answers() -> tuple[Any, Any]:
        step = timedelta(hours=1)
        rolled = model_server_series(app=app, since=since, until=until, step=step)
        read = model_server_series(
            app=app, since=since + timedelta(seconds=1), until=until, step=step
        )
        return rolled["servers"], read["servers"]

    rolled, read = answers()
    assert MetricRollup.objects.filter(series=tokens, seconds=3600).count() == (4 if rolls else 0)
    assert rolled[0]["requests_running"] == pytest.approx(read[0]["requests_running"])
    rates = rolled[0]["generation_tokens_per_second"]
    assert rates == pytest.approx(read[0]["generation_tokens_per_second"])
    assert sum(r is not None for r in rates) == 4  # hours 20 to 23 of the range
    late = start + timedelta(hours=1, seconds=5)  # in an hour rolled up already
    MetricPoint.objects.create(series=running, time_ns=_ns(late), value=1000.0)
    metric_rollups.mark(app.pk, [_ns(late)])
    rolled_again, read_again = answers()
    assert rolled_again[0]["requests_running"] == pytest.approx(read_again[0]["requests_running"])
    assert rolled_again[0]["requests_running"] != rolled[0]["requests_running"]
