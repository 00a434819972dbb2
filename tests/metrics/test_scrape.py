"""The built-in scraper (LLMRUM_SCRAPE_TARGETS): a local endpoint serving vLLM's and
DCGM's real exposition text is stored as the OTLP path stores it; a target that is
down, slow or answers garbage is counted and never stops the others."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from django.db import DataError
from django.test import override_settings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from rumserver.ingest import scrape as scrape_module
from rumserver.ingest.scrape import SCRAPER_SERVICE, scrape_run
from rumserver.ingest.scrape_targets import ScrapeTarget
from rumserver.models import MetricPoint
from rumserver.tasks import scrape
from tests import factories
from tests.metrics.stored import stored_point, stored_points

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
# vLLM 0.33.0 vllm/v1/metrics/loggers.py: TTFT buckets (STANDARDS.md §10.5).
TTFT_BUCKETS = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
TTFTS = [0.03, 0.03, 0.3, 1.2, 12.0]

DCGM_TEXT = """\
# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-5d3c2a1b",pci_bus_id="00000000:00:1E.0",device="nvidia0",modelName="NVIDIA A10G",Hostname="gpu-node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 87
# HELP DCGM_FI_DEV_FB_USED Framebuffer memory used (in MiB).
# TYPE DCGM_FI_DEV_FB_USED gauge
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-5d3c2a1b",pci_bus_id="00000000:00:1E.0",device="nvidia0",modelName="NVIDIA A10G",Hostname="gpu-node-1",DCGM_FI_DRIVER_VERSION="550.54.15"} 20210
"""  # noqa: E501


def vllm_text() -> str:
    """What vLLM's /metrics prints: its metrics declared as vllm/v1/metrics/loggers.py
    declares them (labels model_name and engine, counters without _total), printed by
    prometheus_client's classic text exposition, *_created gauges included."""
    registry = CollectorRegistry()
    labels = ["model_name", "engine"]
    running = Gauge("vllm:num_requests_running", "Number of requests in model execution batches.",
                    labels, registry=registry)  # fmt: skip
    waiting = Gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.",
                    labels, registry=registry)  # fmt: skip
    kv = Gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.",
               labels, registry=registry)  # fmt: skip
    preempt = Counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.",
                      labels, registry=registry)  # fmt: skip
    prompt = Counter("vllm:prompt_tokens", "Number of prefill tokens processed.", labels,
                     registry=registry)  # fmt: skip
    ttft = Histogram("vllm:time_to_first_token_seconds",
                     "Histogram of time to first token in seconds.", labels,
                     buckets=TTFT_BUCKETS, registry=registry)  # fmt: skip
    running.labels(MODEL, "0").set(3)
    waiting.labels(MODEL, "0").set(5)
    kv.labels(MODEL, "0").set(0.42)
    preempt.labels(MODEL, "0").inc(7)
    prompt.labels(MODEL, "0").inc(1234)
    for seconds in TTFTS:
        ttft.labels(MODEL, "0").observe(seconds)
    return generate_latest(registry).decode()


class Endpoints(BaseHTTPRequestHandler):
    pages: dict[str, str] = {}

    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.5)
        body = self.pages.get(self.path, "").encode()
        self.send_response(200 if self.path in self.pages else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Endpoints.pages = {
        "/vllm": vllm_text(),
        "/dcgm": DCGM_TEXT,
        "/garbage": "<html><body>Bad gateway</body></html>\n",
        "/slow": DCGM_TEXT,
    }
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Endpoints)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def free_port_url() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/metrics"


def point(name: str, **filters: object) -> SimpleNamespace:
    return stored_point(name=name, **filters)


@pytest.mark.django_db
def test_it_stores_vllm_and_dcgm_text_as_the_otlp_path_does(server):
    app = factories.make_app().application
    targets = (ScrapeTarget(app.slug, f"{server}/vllm"), ScrapeTarget(app.slug, f"{server}/dcgm"))
    with override_settings(LLMRUM_SCRAPE_TARGETS=targets, LLMRUM_SCRAPE_INTERVAL_SECONDS=15.0):
        scrape()

    running = point("vllm:num_requests_running")
    assert (running.service, running.instance) == (SCRAPER_SERVICE, f"{server}/vllm")
    assert running.kind == MetricPoint.Kind.GAUGE and running.value == 3.0
    assert running.attributes == {"model_name": MODEL, "engine": "0"}
    assert point("vllm:num_requests_waiting").value == 5.0
    assert point("vllm:kv_cache_usage_perc").value == 0.42

    preemptions = point("vllm:num_preemptions_total")
    assert preemptions.kind == MetricPoint.Kind.SUM
    assert (preemptions.value, preemptions.monotonic, preemptions.temporality) == (7.0, True, 2)
    assert point("vllm:prompt_tokens_total").value == 1234.0
    assert not MetricPoint.objects.filter(series__name__endswith="_created").exists()

    ttft = point("vllm:time_to_first_token_seconds")
    assert ttft.kind == MetricPoint.Kind.HISTOGRAM
    assert ttft.bounds == TTFT_BUCKETS
    per_bucket = [0] * (len(TTFT_BUCKETS) + 1)
    for seconds in TTFTS:
        per_bucket[next(i for i, le in enumerate(TTFT_BUCKETS) if seconds <= le)] += 1
    assert ttft.bucket_counts == per_bucket
    assert ttft.count == 5 and ttft.sum == pytest.approx(sum(TTFTS))
    assert ttft.attributes == {"engine": "0", "model_name": MODEL}

    gpu = point("DCGM_FI_DEV_GPU_UTIL")
    assert (gpu.instance, gpu.value, gpu.attributes["Hostname"]) == (
        f"{server}/dcgm",
        87.0,
        "gpu-node-1",
    )
    assert point("DCGM_FI_DEV_FB_USED").value == 20210.0
    assert {p.app_id for p in stored_points()} == {app.id}


@pytest.mark.django_db
def test_a_scrape_repeated_at_the_same_time_lands_once(server):
    app = factories.make_app().application
    targets = [ScrapeTarget(app.slug, f"{server}/vllm")]
    now = datetime(2026, 12, 7, 0, 0, tzinfo=UTC)
    first = scrape_run(targets=targets, now=now, timeout=5)
    again = scrape_run(targets=targets, now=now, timeout=5)
    assert first.stored == again.stored
    assert MetricPoint.objects.count() == first.stored[f"{server}/vllm"]


@pytest.mark.django_db
def test_down_slow_garbage_and_unknown_targets_are_counted_and_the_others_stored(server):
    app = factories.make_app().application
    down = free_port_url()
    targets = [
        ScrapeTarget(app.slug, down),
        ScrapeTarget(app.slug, f"{server}/garbage"),
        ScrapeTarget(app.slug, f"{server}/slow"),
        ScrapeTarget(app.slug, f"{server}/missing"),
        ScrapeTarget("no-such-app", f"{server}/vllm"),
        ScrapeTarget(app.slug, f"{server}/dcgm"),
    ]
    started = time.monotonic()
    result = scrape_run(targets=targets, now=datetime.now(UTC), timeout=0.5)
    assert time.monotonic() - started < 1.5  # fetched side by side, the slow one cut off
    assert result.failed == {
        down: "down",
        f"{server}/garbage": "invalid",
        f"{server}/slow": "timeout",
        f"{server}/missing": "down",
        f"{server}/vllm": "unknown_app",
    }
    assert result.stored == {f"{server}/dcgm": 2}
    assert set(MetricPoint.objects.values_list("series__instance", flat=True)) == {f"{server}/dcgm"}


def settings_in_a_fresh_process(**env: str) -> str:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'rumserver.settings'; "
        "from django.conf import settings; "
        "print(settings.CELERY_BEAT_SCHEDULE.get('rumserver-scrape'), settings.LLMRUM_SCRAPE_TARGETS)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return run.stdout + run.stderr


def test_beat_scrapes_every_interval_only_when_targets_are_set():
    with_targets = settings_in_a_fresh_process(
        LLMRUM_SCRAPE_TARGETS="chat=http://vllm-0:8000/metrics, chat=http://dcgm:9400/metrics",
        LLMRUM_SCRAPE_INTERVAL_SECONDS="5",
    )
    assert "{'task': 'rumserver.scrape', 'schedule': 5.0}" in with_targets
    assert "ScrapeTarget(app_slug='chat', url='http://dcgm:9400/metrics')" in with_targets
    assert settings_in_a_fresh_process(LLMRUM_SCRAPE_TARGETS="").startswith("None ()")
    assert "LLMRUM_SCRAPE_TARGETS wants SLUG=" in settings_in_a_fresh_process(
        LLMRUM_SCRAPE_TARGETS="http://vllm-0:8000/metrics"
    )


@pytest.mark.django_db
def test_a_write_refused_for_one_target_leaves_the_others_stored(server, monkeypatch):
    app = factories.make_app().application
    real_store = scrape_module.store_metric_points

    def store(*, app_id, mapped, now):
        if mapped.new_series[0].metric[1].endswith("/dcgm"):  # the series' instance
            raise DataError("value out of range")
        real_store(app_id=app_id, mapped=mapped, now=now)

    monkeypatch.setattr(scrape_module, "store_metric_points", store)
    targets = [ScrapeTarget(app.slug, f"{server}/dcgm"), ScrapeTarget(app.slug, f"{server}/vllm")]
    result = scrape_run(targets=targets, now=datetime.now(UTC), timeout=5)
    assert result.failed == {f"{server}/dcgm": "store_failed"}
    assert (
        MetricPoint.objects.filter(series__instance=f"{server}/vllm").count()
        == result.stored[f"{server}/vllm"]
    )
