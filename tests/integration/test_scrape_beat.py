"""The built-in scraper under a real Celery worker with its embedded beat: with
LLMRUM_SCRAPE_TARGETS set, beat queues ``rumserver.scrape`` every interval and the
worker stores the endpoint's points, a garbage target beside it logged and skipped."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from rumserver.models import MetricPoint
from tests import factories
from tests.integration.conftest import Process, subprocess_env
from tests.metrics.test_scrape import server  # noqa: F401 - the endpoint fixture

pytestmark = [pytest.mark.postgres, pytest.mark.broker]


def test_beat_scrapes_every_interval_through_the_worker(server, transactional_db, tmp_path: Path):  # noqa: F811
    app = factories.make_app().application
    targets = f"{app.slug}={server}/vllm,{app.slug}={server}/garbage"
    args = [sys.executable, "-m", "celery", "-A", "rumserver", "worker", "-B", "--pool", "solo",
            "--loglevel", "INFO", "--without-heartbeat", "--without-gossip", "--without-mingle"]  # fmt: skip
    env = subprocess_env(
        LLMRUM_SCRAPE_TARGETS=targets,
        LLMRUM_SCRAPE_INTERVAL_SECONDS="1",
        LLMRUM_DATA_DIR=str(tmp_path),  # beat's schedule file
    )
    worker = Process(args, env, tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 60
        times: set[int] = set()
        while len(times) < 2 and time.monotonic() < deadline:
            running = MetricPoint.objects.filter(
                series__app=app, series__name="vllm:num_requests_running"
            )
            times = set(running.values_list("time_ns", flat=True))
            time.sleep(0.3)
        assert len(times) >= 2, worker.output()[-4000:]  # two scrapes, one interval apart
        log = worker.wait_for(lambda text: f"scrape of {server}/garbage failed (invalid)" in text)
        assert "rumserver.scrape" in log
        assert set(running.values_list("series__instance", flat=True)) == {f"{server}/vllm"}
    finally:
        worker.stop()
