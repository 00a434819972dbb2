"""One minute's evaluation of the alert rules: each enabled rule's figure over its
window, and an event when the rule starts firing or resolves.

Exactly once: the rule's new state and its event are written in one transaction that
holds the rule's row lock (``select_for_update``), so evaluations running at once on
several workers, or a retried one, raise one event per change. Delivery comes after
the commit (``alerts.delivery``), so a rolled-back change is never announced."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction

from correlator.alerts.figures import figure_value
from correlator.alerts.models import AlertEvent, AlertRule
from correlator.analytics.figures import window_metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvaluationResult:
    rules: int
    events: list[int]  # ids of the events raised


def alert_rules_evaluate(*, now: datetime) -> EvaluationResult:
    """Evaluate every enabled rule at ``now``; a rule that fails is logged and the
    others still run."""
    rule_ids = list(AlertRule.objects.filter(enabled=True).values_list("pk", flat=True))
    events = []
    for rule_id in rule_ids:
        try:
            event = alert_rule_evaluate(rule_id=rule_id, now=now)
        except Exception:
            logger.exception("alert rule %s: evaluation failed", rule_id)
            continue
        if event is not None:
            events.append(event.pk)
    return EvaluationResult(rules=len(rule_ids), events=events)


def alert_rule_evaluate(*, rule_id: int, now: datetime) -> AlertEvent | None:
    """The rule's figure over the ``window_minutes`` before ``now``; the event it
    raises, if its state changes. Below ``min_turns`` turns nothing changes."""
    until = now
    with transaction.atomic():
        rule = (
            AlertRule.objects.select_for_update()
            .select_related("application")
            .filter(pk=rule_id, enabled=True)
            .first()
        )
        if rule is None:  # disabled or deleted since the list was read
            return None
        since = until - timedelta(minutes=rule.window_minutes)
        answer = window_metrics(app=rule.application, since=since, until=until)
        turns = int(answer["turns"])
        if turns < rule.min_turns:
            return None
        value = figure_value(answer, rule.figure)
        # A figure the window has no value of (no turn had a TTFT) breaches nothing.
        breached = value is not None and rule.breached(value)
        firing = rule.state == AlertRule.State.FIRING
        if breached == firing:
            return None
        rule.state = AlertRule.State.FIRING if breached else AlertRule.State.OK
        rule.save(update_fields=["state"])
        return AlertEvent.objects.create(
            rule=rule,
            state=AlertEvent.State.FIRING if breached else AlertEvent.State.RESOLVED,
            value=value,
            turns=turns,
            since=since,
            until=until,
            created_at=now,
        )
