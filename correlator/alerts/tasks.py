"""``alerts.evaluate``: run by beat every minute."""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from django.utils import timezone

from correlator.alerts.delivery import alert_events_deliver
from correlator.alerts.evaluate import alert_rules_evaluate

logger = logging.getLogger(__name__)


@shared_task(name="alerts.evaluate", ignore_result=True)
def evaluate(**kwargs: Any) -> None:
    """Evaluate the rules, then send every event not yet sent: this run's, and any a
    worker that stopped after committing left behind."""
    now = timezone.now()
    result = alert_rules_evaluate(now=now)
    sent = alert_events_deliver(now=timezone.now())
    logger.info("alerts: %d rules, %d events, %d sent", result.rules, len(result.events), sent)
