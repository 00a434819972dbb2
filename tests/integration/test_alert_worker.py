"""Alerts through a real Celery worker on the real broker: an event committed by a
worker that died before sending is sent once by the next, and restarting the worker
and evaluating again never sends anything twice."""

from __future__ import annotations

import signal
import time

import pytest
from django.test import Client
from django.utils import timezone

from correlator.alerts.evaluate import alert_rules_evaluate
from correlator.alerts.models import AlertEvent, AlertRule
from rumserver.celery import app as celery_app
from tests import factories
from tests.alerts.conftest import stitched_turns
from tests.alerts.receiver import WebhookReceiver
from tests.integration.conftest import Process

pytestmark = [pytest.mark.postgres, pytest.mark.broker]


# The local receiver is on 127.0.0.1: allowed, as an operator allows their network.
LOCAL_WEBHOOKS = {"LLMRUM_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}


def evaluated(worker: Process, times: int) -> None:
    """Queue ``alerts.evaluate`` (as beat does) and wait until the worker ran it ``times``
    times in all."""
    celery_app.send_task("alerts.evaluate", kwargs={})
    worker.wait_for(lambda log: _runs(log) >= times, timeout=60)


def _runs(log: str) -> int:
    return sum("alerts.evaluate[" in line and "succeeded" in line for line in log.splitlines())


def test_a_restarted_worker_sends_each_event_once(start_worker):
    client = Client()
    created = factories.make_app()
    stitched_turns(client, created, minutes_ago=2, outcome="stopped", n=2)
    receiver = WebhookReceiver()
    try:
        rule = AlertRule.objects.create(
            application=created.application, name="Users stop answers",
            figure="rates.stop_rate", operator=">", threshold=0.5, window_minutes=10,
            min_turns=2, webhook_url=receiver.url,
        )  # fmt: skip
        # A worker committed the firing event and died before sending it.
        assert len(alert_rules_evaluate(now=timezone.now()).events) == 1

        worker = start_worker(**LOCAL_WEBHOOKS)
        evaluated(worker, 1)
        assert [b["state"] for b in receiver.bodies] == ["firing"]
        evaluated(worker, 2)  # still breached: nothing new
        worker.proc.send_signal(signal.SIGKILL)  # no warm shutdown
        worker.stop()

        worker = start_worker(**LOCAL_WEBHOOKS)
        evaluated(worker, 1)
        evaluated(worker, 2)
        assert [b["state"] for b in receiver.bodies] == ["firing"]
        assert AlertEvent.objects.get().notified_at is not None

        stitched_turns(client, created, minutes_ago=1, outcome="completed", n=8)  # cleared
        evaluated(worker, 3)
        worker.stop()
        worker = start_worker(**LOCAL_WEBHOOKS)
        evaluated(worker, 1)
        time.sleep(0.5)  # a stray duplicate delivery would land now
        assert [b["state"] for b in receiver.bodies] == ["firing", "resolved"]
        assert list(AlertEvent.objects.order_by("pk").values_list("state", flat=True)) == [
            "firing",
            "resolved",
        ]
        rule.refresh_from_db()
        assert rule.state == "ok"
    finally:
        receiver.close()
