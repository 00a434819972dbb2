"""Alert rules and the events they raise (DESIGN.md §10.6).

A rule's ``state`` and the event of each change are written together, in one
transaction holding the rule's row lock (``alerts.evaluate``): two evaluations of
one rule at once, on two workers, raise one event between them."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, validate_email
from django.db import models

from correlator.alerts.figures import figure_paths
from correlator.alerts.webhook_guard import literal_address_refused
from rumserver.models import Application


def validate_figure(path: str) -> None:
    if path not in figure_paths():
        raise ValidationError(
            f"{path!r} is no figure of the metrics answer; one of: {', '.join(figure_paths())}"
        )


def validate_recipients(recipients: object) -> None:
    if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
        raise ValidationError('a list of e-mail addresses, e.g. ["oncall@example.com"]')
    for address in recipients:
        try:
            validate_email(address)
        except ValidationError:
            # Its own code: a model error coded "invalid" takes the form field's message
            # for that code ("Enter a valid JSON.") in the admin.
            raise ValidationError(f"{address!r} is no e-mail address", code="recipient") from None


class AlertRule(models.Model):
    class Operator(models.TextChoices):
        ABOVE = ">", "above (>)"
        BELOW = "<", "below (<)"

    class State(models.TextChoices):
        OK = "ok"
        FIRING = "firing"

    application = models.ForeignKey(Application, on_delete=models.CASCADE)
    name = models.CharField(max_length=200)
    figure = models.CharField(
        max_length=64,
        validators=[validate_figure],
        help_text="A figure of GET /api/v1/metrics, e.g. client_ttft_ms.p95 or rates.error_rate.",
    )
    operator = models.CharField(max_length=1, choices=Operator.choices)
    threshold = models.FloatField()
    window_minutes = models.PositiveIntegerField(
        default=5, validators=[MinValueValidator(1)], help_text="The last this many minutes."
    )
    min_turns = models.PositiveIntegerField(
        default=20, help_text="Fewer turns in the window: the rule stays as it is."
    )
    webhook_url = models.URLField(
        max_length=2000, blank=True, help_text="Sent a JSON POST (Slack-style text)."
    )
    email_recipients = models.JSONField(
        default=list, blank=True, validators=[validate_recipients], help_text="E-mail addresses."
    )
    enabled = models.BooleanField(default=True)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OK)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.name} ({self.figure} {self.operator} {self.threshold:g})"

    def clean(self) -> None:
        # Not a field validator: the allowed networks are a setting, not the schema's.
        refused = literal_address_refused(self.webhook_url) if self.webhook_url else None
        if refused:
            raise ValidationError({"webhook_url": refused})

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.operator == ">" else value < self.threshold


class AlertEvent(models.Model):
    """A rule started firing or resolved. ``notified_at`` is set once its webhook and
    e-mail were sent; ``claimed_at`` marks a delivery under way (a claim older than
    ``CLAIM_SECONDS`` is taken to have died with its worker)."""

    class State(models.TextChoices):
        FIRING = "firing"
        RESOLVED = "resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="events")
    state = models.CharField(max_length=8, choices=State.choices)
    value = models.FloatField(null=True, help_text="The figure over the window.")
    turns = models.PositiveIntegerField(default=0, help_text="Turns in the window.")
    since = models.DateTimeField()
    until = models.DateTimeField()
    created_at = models.DateTimeField()
    claimed_at = models.DateTimeField(null=True, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    delivery_failures = models.PositiveIntegerField(
        default=0, help_text="Webhook and e-mail sends that failed (logged)."
    )

    class Meta:
        indexes = [
            models.Index(fields=["-created_at"], name="alertevent_newest"),
            models.Index(
                fields=["created_at"],
                name="alertevent_undelivered",
                condition=models.Q(notified_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rule.name} {self.state} at {self.created_at:%Y-%m-%d %H:%M}"
