"""What the vitals and errors pages read: one type of an application's browser
events over a range, newest first, through their own partial index
(``event_vital_error_received``: application, type, received time), then the
sessions they name by key."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import BigIntegerField, F, Field, QuerySet
from django.db.models.expressions import Expression, RawSQL

from correlator.epoch import datetime_of
from correlator.reports.forms import TimeRange
from rumserver.models import Application, BrowserEvent, BrowserSession


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


def session_values(pks: Iterable[int], field: str) -> dict[int, Any]:
    """Session pk -> one field of it, for these sessions, by primary key in one
    query: each session probed once rather than once an event joined to it (a page
    load reports five vitals, a broken page throws the same error again and again);
    the join was half the read of 20,000 events."""
    wanted = sorted(set(pks))
    if not wanted:
        return {}
    if connection.vendor != "postgresql":
        return dict(BrowserSession.objects.filter(pk__in=wanted).values_list("pk", field))
    # One probe of the primary key a session (the LIMIT keeps the lateral from being
    # flattened into a join): as an IN list or a join, without statistics,
    # PostgreSQL read every session of the table.
    model_field = BrowserSession._meta.get_field(field)
    assert isinstance(model_field, Field)
    column = model_field.column
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT s.id, s.{column} FROM unnest(%s::bigint[]) AS k(id)
                CROSS JOIN LATERAL (
                    SELECT id, {column} FROM {BrowserSession._meta.db_table} WHERE id = k.id LIMIT 1
                ) AS s""",
            [wanted],
        )
        return dict(cursor.fetchall())
