"""What the vitals and errors pages read: one type of an application's browser
events over a range, newest first, through their own partial index
(``event_vital_error_received``: application, type, received time)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import BigIntegerField, F, QuerySet
from django.db.models.expressions import Expression, RawSQL

from correlator.epoch import datetime_of
from correlator.reports.forms import TimeRange
from rumserver.models import Application, BrowserEvent


def range_events(*, app: Application, type: str, window: TimeRange) -> QuerySet[BrowserEvent]:
    return BrowserEvent.objects.filter(
        app=app, type=type, received_at__gte=window.since, received_at__lt=window.until
    ).order_by("-received_at")


def received() -> tuple[Expression | F, Callable[[Any], datetime]]:
    """What to select for an event's receive time, and what makes it a datetime: on
    PostgreSQL integer microseconds since the epoch (exact), made a datetime by
    integer arithmetic; parsing 20,000 timestamps as text was a fifth of a page."""
    if connection.vendor != "postgresql":
        return F("received_at"), _same
    table = BrowserEvent._meta.db_table
    us = RawSQL(
        f'(extract(epoch FROM "{table}"."received_at") * 1000000)::bigint',
        [],
        output_field=BigIntegerField(),
    )
    return us, datetime_of


def _same(value: datetime) -> datetime:
    return value
