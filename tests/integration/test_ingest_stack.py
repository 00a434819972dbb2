"""Beacon ingest on the real stack: gunicorn, PostgreSQL, Redis, a Celery worker."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from django.db import connections
from django.test import Client, override_settings

from correlator.models import Trace
from rumserver.ingest.hints import hints
from rumserver.models import BrowserEvent, BrowserSession, DirtyTrace
from tests import factories
from tests.integration.conftest import free_port, http, post_beacon

pytestmark = [pytest.mark.postgres]


@pytest.mark.broker
def test_a_beacon_through_gunicorn_reaches_a_real_worker(start_web, start_worker):
    app = factories.make_app()
    worker = start_worker()
    base = start_web()
    turn = factories.turn_event()
    status, _, body = post_beacon(base, app.application.public_key, factories.batch([turn]))
    assert status == 202, body
    assert BrowserEvent.objects.get().trace_id == turn["trace_id"]
    # The hint sent after commit wakes the worker, which finds the dirty trace.
    worker.wait_for(lambda text: "correlator sweep: 1 traces stitched" in text, timeout=30)
    assert Trace.objects.get().trace_id == turn["trace_id"]


def test_a_broker_that_is_down_does_not_fail_the_request(start_web):
    app = factories.make_app()
    dead_broker = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    base = start_web(CELERY_BROKER_URL=dead_broker)
    started = time.monotonic()
    status, _, body = post_beacon(base, app.application.public_key, factories.batch())
    assert status == 202, body
    assert time.monotonic() - started < 2.0  # the request never waits on the broker
    assert json.loads(body) == {"accepted": 1, "rejected": []}
    assert BrowserEvent.objects.count() == 1 and DirtyTrace.objects.count() == 1
    # Ingest still commits, so a load balancer must keep the node (DESIGN.md §10.1).
    status, _, body = http("GET", base + "/healthz")
    assert status == 200
    report = json.loads(body)
    assert (report["status"], report["database"], report["broker"]) == ("ok", "ok", "down")
    assert report["failing"] == ["broker"]


def test_a_database_that_is_down_is_503_on_healthz_and_beacons(start_web):
    app = factories.make_app()
    dead_db = f"postgres://postgres@127.0.0.1:{free_port()}/nothing"
    base = start_web(DATABASE_URL=dead_db)
    status, headers, body = post_beacon(base, app.application.public_key, factories.batch())
    # The key cannot be looked up without a database: a retryable 503, never a 500.
    assert status == 503, body
    assert headers["Retry-After"] == "5"
    status, _, body = http("GET", base + "/healthz")
    assert status == 503 and "database" in json.loads(body)["failing"]


@pytest.mark.broker
@override_settings(LLMRUM_HINT_INTERVAL_SECONDS=0)
def test_the_hint_is_published_to_the_broker_after_commit(transactional_db):
    broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    broker.delete("llmrum")
    app = factories.make_app()
    sent_before = hints.sent
    client = Client()
    r = client.post(
        f"/rum/v1/beacon?key={app.application.public_key}",
        factories.encode(factories.batch()),
        content_type="text/plain",
        HTTP_ORIGIN=factories.CHAT_ORIGIN,
    )
    assert r.status_code == 202
    deadline = time.monotonic() + 10
    while hints.sent == sent_before and time.monotonic() < deadline:
        time.sleep(0.05)
    messages = [json.loads(m) for m in broker.lrange("llmrum", 0, -1)]
    assert any(m["headers"]["task"] == "correlator.sweep" for m in messages), messages


def test_concurrent_duplicate_batches_are_stored_once_without_deadlocks(transactional_db):
    """Eight browsers retrying overlapping batches at once: no 5xx, each event once."""
    app = factories.make_app()
    events = [factories.turn_event() for _ in range(20)]
    bodies = [
        factories.batch(list(reversed(events)) if i % 2 else events, session={"id": "s-shared"})
        for i in range(8)
    ]
    barrier = threading.Barrier(8)

    def send(body: dict) -> int:
        client = Client()
        barrier.wait()
        try:
            return client.post(
                f"/rum/v1/beacon?key={app.application.public_key}",
                factories.encode(body),
                content_type="text/plain",
                HTTP_ORIGIN=factories.CHAT_ORIGIN,
            ).status_code
        finally:
            connections.close_all()  # each thread has its own connection

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(send, bodies))
    assert statuses == [202] * 8
    assert BrowserEvent.objects.count() == 20
    assert BrowserSession.objects.count() == 1
    assert DirtyTrace.objects.count() == 20
