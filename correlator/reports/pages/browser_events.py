"""What the vitals and errors pages read: one type of an application's browser
events over a range, newest first, through their own partial index
(``event_vital_error_received``: application, type, received time)."""

from __future__ import annotations

from django.db.models import QuerySet

from correlator.reports.forms import TimeRange
from rumserver.models import Application, BrowserEvent


def range_events(*, app: Application, type: str, window: TimeRange) -> QuerySet[BrowserEvent]:
    return BrowserEvent.objects.filter(
        app=app, type=type, received_at__gte=window.since, received_at__lt=window.until
    ).order_by("-received_at")
