"""A rule fires once when its figure is breached and resolves once when it clears;
each event is sent once, by webhook and e-mail, linking to its window's traces."""

from __future__ import annotations

import threading
from datetime import timedelta
from urllib.parse import parse_qs, urlparse

import pytest
from django.contrib.auth.models import User
from django.core import mail
from django.db import connection
from django.utils import timezone

from correlator.alerts.delivery import alert_events_deliver
from correlator.alerts.evaluate import alert_rule_evaluate, alert_rules_evaluate
from correlator.alerts.models import AlertEvent, AlertRule
from correlator.alerts.tasks import evaluate
from tests import factories
from tests.alerts.conftest import stitched_turns

pytestmark = pytest.mark.django_db


def stop_rule(app, webhook_url: str = "", **fields) -> AlertRule:
    """Fires when more than half the turns of the last ten minutes were stopped."""
    defaults = {"name": "Users stop answers", "figure": "rates.stop_rate", "operator": ">",
                "threshold": 0.5, "window_minutes": 10, "min_turns": 2,
                "email_recipients": ["oncall@example.com"]}  # fmt: skip
    return AlertRule.objects.create(
        application=app, webhook_url=webhook_url, **{**defaults, **fields}
    )


def test_it_fires_once_when_breached_and_resolves_once_when_cleared(client, webhook):
    created = factories.make_app()
    stitched_turns(client, created, minutes_ago=20, outcome="stopped", n=3)
    stitched_turns(client, created, minutes_ago=2, outcome="completed", n=3)
    rule = stop_rule(created.application, webhook.url)
    now = timezone.now()

    breached_at = now - timedelta(minutes=12)  # its window holds the stopped turns
    for _ in range(3):
        alert_rules_evaluate(now=breached_at)
        alert_events_deliver(now=breached_at)
    rule.refresh_from_db()
    assert rule.state == "firing"
    assert [(e.state, e.value, e.turns) for e in AlertEvent.objects.all()] == [("firing", 1.0, 3)]
    assert [b["state"] for b in webhook.bodies] == ["firing"]
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["oncall@example.com"]

    for _ in range(3):  # cleared: the last ten minutes hold completed turns only
        alert_rules_evaluate(now=now)
        alert_events_deliver(now=now)
    rule.refresh_from_db()
    assert rule.state == "ok"
    events = list(AlertEvent.objects.order_by("created_at"))
    assert [(e.state, e.value) for e in events] == [("firing", 1.0), ("resolved", 0.0)]
    assert all(e.notified_at is not None and e.delivery_failures == 0 for e in events)
    assert [b["state"] for b in webhook.bodies] == ["firing", "resolved"]
    assert len(mail.outbox) == 2 and "RESOLVED" in mail.outbox[1].subject

    body = webhook.bodies[0]
    assert body["text"].startswith("[llmrum] FIRING: Users stop answers")
    assert body["value"] == 1.0 and body["figure"] == "rates.stop_rate" and body["turns"] == 3
    link = urlparse(body["traces_url"])
    assert link.path == "/reports/traces"
    query = parse_qs(link.query)
    assert query["app"] == [created.application.slug]
    assert query["since"] == [(breached_at - timedelta(minutes=10)).isoformat()]
    assert query["until"] == [breached_at.isoformat()]
    assert body["traces_url"] in body["text"] and body["traces_url"] in mail.outbox[0].body
    # The link lists the window's traces: the three stopped turns.
    client.force_login(User.objects.create_user("staff", password="pw", is_staff=True))
    listed = client.get(body["traces_url"])
    assert listed.status_code == 200 and listed.content.count(b"stopped") >= 3


def test_it_changes_nothing_below_the_minimum_turns(client):
    created = factories.make_app()
    stitched_turns(client, created, minutes_ago=2, outcome="stopped", n=3)
    rule = stop_rule(created.application, min_turns=4)
    alert_rules_evaluate(now=timezone.now())
    rule.refresh_from_db()
    assert rule.state == "ok" and not AlertEvent.objects.exists()


def test_a_failing_webhook_is_counted_and_never_stops_the_task(client, failing_webhook, caplog):
    created = factories.make_app()
    stitched_turns(client, created, minutes_ago=2, outcome="stopped", n=2)
    stop_rule(created.application, failing_webhook.url)
    stop_rule(created.application, "http://127.0.0.1:9/unreachable", name="second")
    evaluate()  # the Celery task's body, as beat runs it
    events = list(AlertEvent.objects.all())
    assert len(events) == 2
    assert all(e.notified_at is not None and e.delivery_failures == 1 for e in events)
    assert len(failing_webhook.bodies) == 1 and len(mail.outbox) == 2
    assert "webhook" in caplog.text
    evaluate()  # sent is sent: a failed webhook is not retried into a flood
    assert len(failing_webhook.bodies) == 1 and len(mail.outbox) == 2


def test_a_claim_left_by_a_dead_worker_is_delivered_once_it_expires(client, webhook):
    created = factories.make_app()
    stitched_turns(client, created, minutes_ago=2, outcome="stopped", n=2)
    stop_rule(created.application, webhook.url)
    now = timezone.now()
    alert_rules_evaluate(now=now)
    AlertEvent.objects.update(claimed_at=now)  # a worker claimed it, then died
    assert alert_events_deliver(now=now + timedelta(seconds=60)) == 0
    assert alert_events_deliver(now=now + timedelta(seconds=301)) == 1
    assert alert_events_deliver(now=now + timedelta(seconds=900)) == 0
    assert len(webhook.bodies) == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_evaluations_running_at_once_raise_one_event(client):
    """Four workers evaluate the breached rule at the same moment: the rule's row lock
    lets one raise the event; the others find it firing."""
    created = factories.make_app()
    stitched_turns(client, created, minutes_ago=2, outcome="stopped", n=2)
    rule = stop_rule(created.application)
    now = timezone.now()
    start = threading.Barrier(4)
    raised: list[object] = []

    def evaluate_once() -> None:
        try:
            start.wait()
            raised.append(alert_rule_evaluate(rule_id=rule.pk, now=now))
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluate_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(raised) == 4 and sum(event is not None for event in raised) == 1
    assert AlertEvent.objects.count() == 1
