"""The correlator loses nothing and doubles nothing when a worker is killed
mid-sweep or the broker goes away under ingest."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.test import Client

from correlator.models import Trace, Turn
from rumserver.models import DirtyTrace, Span
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp
from tests.integration.conftest import ROOT, free_port, post_beacon, subprocess_env

pytestmark = [pytest.mark.postgres]


def _backlog(n: int) -> list[GoldenTurn]:
    created = factories.make_app()
    client = Client()
    goldens = [GoldenTurn(t0=time.time() * 1000 - 2000, session=f"s{i % 40}") for i in range(n)]
    for golden in goldens:
        send_beacon(client, created.application.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
    return goldens


def test_a_worker_killed_mid_sweep_loses_and_doubles_nothing(
    transactional_db, tmp_path: Path, settings
):
    settings.LLMRUM_BEACON_IP_RATE_LIMIT = 1e6  # one test client sends the whole backlog
    goldens = _backlog(400)
    env = subprocess_env()
    log = (tmp_path / "stitch.log").open("wb")
    # Tiny batches so that the kill lands between and inside committed batches.
    worker = subprocess.Popen(
        [sys.executable, "manage.py", "stitch", "--batch-size", "5"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while Trace.objects.count() < 50 and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.02)
    assert worker.poll() is None, "the sweep finished before it could be killed"
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    log.close()
    stitched_before = Trace.objects.count()
    assert 0 < stitched_before < 400 and DirtyTrace.objects.count() == 400 - stitched_before
    # The next sweep (same code path, a new process) finishes the work.
    done = subprocess.run([sys.executable, "manage.py", "stitch"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert Trace.objects.count() == 400 and Turn.objects.count() == 400
    assert Span.objects.filter(role="browser").count() == 400  # one browser span each
    assert DirtyTrace.objects.count() == 0
    assert set(Trace.objects.values_list("trace_id", flat=True)) == {g.trace_id for g in goldens}


@pytest.mark.skipif(
    not shutil.which("redis-server"), reason="needs redis-server to run a private broker"
)
def test_a_broker_stopped_under_ingest_delays_but_loses_nothing(start_web, start_worker, tmp_path):
    port = free_port()
    redis_cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
    broker_url = f"redis://127.0.0.1:{port}/0"
    redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        created = factories.make_app()
        base = start_web(CELERY_BROKER_URL=broker_url)
        goldens = [GoldenTurn(t0=time.time() * 1000 - 2000, session=f"b{i}") for i in range(30)]

        def post(golden: GoldenTurn) -> None:
            status, _, body = post_beacon(base, created.application.public_key, golden.beacon())
            assert status == 202, body

        for golden in goldens[:10]:
            post(golden)
        redis.send_signal(signal.SIGTERM)  # the broker goes away ...
        redis.wait(timeout=10)
        for golden in goldens[10:20]:
            post(golden)  # ... ingest carries on
        redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL)  # ... and comes back
        time.sleep(0.5)
        for golden in goldens[20:]:
            post(golden)
        worker = start_worker(CELERY_BROKER_URL=broker_url)
        # One hint (or beat) is enough: the sweep finds every trace in the database.
        deadline = time.monotonic() + 60
        while Trace.objects.count() < 30 and time.monotonic() < deadline:
            if DirtyTrace.objects.exists():
                post(GoldenTurn(t0=time.time() * 1000 - 2000, session="nudge"))
            time.sleep(1)
        traces = set(Trace.objects.values_list("trace_id", flat=True))
        assert {g.trace_id for g in goldens} <= traces, worker.output()[-3000:]
        assert Turn.objects.filter(trace__trace_id__in=[g.trace_id for g in goldens]).count() == 30
    finally:
        redis.send_signal(signal.SIGTERM)
        redis.wait(timeout=10)
