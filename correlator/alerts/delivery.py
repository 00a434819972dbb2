"""Sending alert events: a webhook (JSON POST with a Slack-style ``text`` and the
event's fields) and e-mail through Django's e-mail backend.

Each event is sent once: a delivery first claims the event with an UPDATE that must
change exactly one row, sends, then records ``notified_at``. A worker that dies after
the claim leaves it to expire (``CLAIM_SECONDS``), and the next evaluation sends it;
one that dies between sending and recording makes that event go out a second time, at
most once per such crash. A failed send is logged and counted on the event, never
raised: one broken webhook must not stop the other rules' alerts."""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from django.db.models import Q

from correlator.alerts.links import window_traces_url
from correlator.alerts.models import AlertEvent
from correlator.alerts.webhook_guard import guarded_opener

logger = logging.getLogger(__name__)

CLAIM_SECONDS = 300  # a delivery not recorded after this long died with its worker
WEBHOOK_TIMEOUT_SECONDS = 5.0


def alert_events_deliver(*, now: datetime) -> int:
    """Send every event not yet notified (the oldest first); how many were sent."""
    pending = AlertEvent.objects.filter(notified_at__isnull=True).order_by("created_at")
    sent = 0
    for event_id in pending.values_list("pk", flat=True)[:100]:
        if alert_event_deliver(event_id=event_id, now=now):
            sent += 1
    return sent


def alert_event_deliver(*, event_id: int, now: datetime) -> bool:
    """Claim the event, send it, record it; False when another delivery holds it or
    it was sent."""
    claimed = (
        AlertEvent.objects.filter(pk=event_id, notified_at__isnull=True)
        .filter(
            Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - timedelta(seconds=CLAIM_SECONDS))
        )
        .update(claimed_at=now)
    )
    if claimed != 1:
        return False
    event = AlertEvent.objects.select_related("rule__application").get(pk=event_id)
    failures = 0
    message = alert_message(event)
    if event.rule.webhook_url and not _webhook_send(event.rule.webhook_url, message):
        failures += 1
    if event.rule.email_recipients and not _email_send(event.rule.email_recipients, message):
        failures += 1
    AlertEvent.objects.filter(pk=event_id).update(notified_at=now, delivery_failures=failures)
    return True


def alert_message(event: AlertEvent) -> dict[str, Any]:
    """The webhook's JSON body; its ``text`` is also the e-mail's body."""
    rule = event.rule
    app = rule.application
    url = window_traces_url(app_slug=app.slug, since=event.since, until=event.until)
    value = "no value" if event.value is None else f"{event.value:g}"
    verb = "FIRING" if event.state == AlertEvent.State.FIRING else "RESOLVED"
    text = (
        f"[llmrum] {verb}: {rule.name} ({app.slug}): {rule.figure} = {value} "
        f"({rule.operator} {rule.threshold:g}) over the last {rule.window_minutes} min, "
        f"{event.turns} turns. Traces: {url}"
    )
    return {
        "text": text,
        "state": event.state,
        "rule": rule.name,
        "rule_id": rule.pk,
        "event_id": event.pk,
        "app": app.slug,
        "figure": rule.figure,
        "operator": rule.operator,
        "threshold": rule.threshold,
        "value": event.value,
        "turns": event.turns,
        "since": event.since.isoformat(),
        "until": event.until.isoformat(),
        "traces_url": url,
    }


def _webhook_send(url: str, message: dict[str, Any]) -> bool:
    request = urllib.request.Request(
        url,
        data=json.dumps(message).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "llmrum-alerts"},
        method="POST",
    )
    try:
        with guarded_opener().open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as response:
            response.read(1024)
        return True
    # URLError, HTTPError (a redirect too), timeouts and a refused address are OSErrors.
    except (OSError, ValueError) as error:
        logger.warning("alert %s: webhook %s failed: %s", message["event_id"], url, error)
        return False


def _email_send(recipients: list[str], message: dict[str, Any]) -> bool:
    subject = message["text"].split(" over the last ")[0][:200]
    try:
        send_mail(subject, message["text"], settings.DEFAULT_FROM_EMAIL, recipients)
        return True
    except Exception as error:  # SMTP, DNS and socket errors alike: logged, counted
        logger.warning("alert %s: e-mail failed: %s", message["event_id"], error)
        return False
