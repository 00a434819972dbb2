"""Deleting raw and stitched data past each application's retention days.

On PostgreSQL the raw tables are day partitions (rumserver.partitions): the days
older than the longest retention in force (every application's ``retention_days``,
capped by ``LLMRUM_RETENTION_DAYS`` when set) are dropped whole, one ``DROP TABLE``
a day, without reading a row. What an application with a shorter retention keeps
too long within the kept days, and everything on SQLite, is deleted row by row in
bounded batches, so a large purge never holds long locks or one huge transaction.
Rollups of the turns' hours and days are never touched here, nor the model servers'
hours, three and six hours and days; the vitals and errors pages' rollups go with the
reports they count, the model servers' points and minutes with the other raw rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Model, Q, QuerySet

from correlator.models import Conversation, DirtyRollup, EventRollup, Rollup, Trace
from rumserver.metric_rollups import FIVE_MINUTES, HOUR, MINUTE, NS
from rumserver.models import (
    Application,
    BrowserEvent,
    BrowserSession,
    DirtyEventRollup,
    MetricDirty,
    MetricPoint,
    MetricRollup,
    MetricSeries,
    Score,
    Span,
)
from rumserver.partitions import partitions_drop_before

BATCH = 5_000
HOUR_NS = HOUR * NS


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)  # day partitions


def retention_days(app: Application) -> int:
    """The application's retention, capped by LLMRUM_RETENTION_DAYS when that is set."""
    cap: int = settings.LLMRUM_RETENTION_DAYS
    return min(app.retention_days, cap) if cap else app.retention_days


def partition_cutoff(*, now: datetime, apps: list[Application]) -> date:
    """The first day kept whole: days before it are past every application's retention."""
    cap: int = settings.LLMRUM_RETENTION_DAYS
    keep = max(
        (retention_days(a) for a in apps), default=cap or settings.LLMRUM_DEFAULT_RETENTION_DAYS
    )
    # A day partition goes once all of it is older than the cut: its end <= now - keep.
    return (now - timedelta(days=keep)).date()


def _delete_in_batches(queryset: QuerySet[Model], *, batch: int, budget: int) -> int:
    """Delete what the queryset selects, ``batch`` rows a statement, at most ``budget``."""
    deleted = 0
    while deleted < budget:
        ids = list(queryset.values_list("pk", flat=True)[: min(batch, budget - deleted)])
        if not ids:
            break
        queryset.model._default_manager.filter(pk__in=ids).delete()
        deleted += len(ids)
    return deleted


def _expired_event_rollups(app: Application, cutoff: datetime) -> QuerySet[EventRollup]:
    """The vitals and errors pages' rollup rows whose whole period is before the cut."""
    expired = Q()
    for period, length in (("minute", 1), ("hour", 60), ("day", 1440)):
        expired |= Q(period=period, start__lte=cutoff - timedelta(minutes=length))
    return EventRollup.objects.filter(expired, app=app)


def _expired_metric_minutes(app: Application, cutoff_ns: int) -> QuerySet[MetricRollup]:
    """The model servers' minute and five-minute rollups wholly before the cut."""
    expired = Q()
    for seconds in (MINUTE, FIVE_MINUTES):
        expired |= Q(seconds=seconds, start_ns__lte=cutoff_ns - seconds * NS)
    return MetricRollup.objects.filter(expired, app=app)


def _delete_expired_points(app: Application, cutoff_ns: int, *, batch: int, budget: int) -> int:
    """The application's metric points before the cut, ``batch`` rows a statement. On
    PostgreSQL the whole days went with their partitions: what is left is an
    application's shorter retention within days kept for another, and strays in the
    default partition. The key leads with the time, so each statement reads the
    expired range only."""
    points, series = MetricPoint._meta.db_table, MetricSeries._meta.db_table
    deleted = 0
    with connection.cursor() as cursor:
        while deleted < budget:
            cursor.execute(
                f"DELETE FROM {points} WHERE (time_ns, series_id) IN ("
                f"SELECT time_ns, series_id FROM {points} WHERE time_ns < %s "
                f"AND series_id IN (SELECT id FROM {series} WHERE app_id = %s) LIMIT %s)",
                [cutoff_ns, app.pk, min(batch, budget - deleted)],
            )
            if cursor.rowcount <= 0:
                break
            deleted += cursor.rowcount
    return deleted


def retention_run(*, now: datetime, batch: int = BATCH, budget: int = 1_000_000) -> RetentionResult:
    """One pass over every application; what the budget leaves goes next time."""
    result = RetentionResult()
    apps = list(Application.objects.all())
    result.dropped = partitions_drop_before(partition_cutoff(now=now, apps=apps))
    for app in apps:
        cutoff = now - timedelta(days=retention_days(app))
        cutoff_ns = int(cutoff.timestamp() * 1e9)
        plan: list[tuple[str, QuerySet[Model]]] = [
            # Stitched traces first (turns go with them), then what they were made of.
            ("traces", Trace.objects.filter(app=app, last_received_at__lt=cutoff)),
            # A conversation whose every turn was sent before the cut: its turns went
            # with their day partitions or their traces.
            (
                "conversations",
                Conversation.objects.filter(app=app, last_send_ms__lt=cutoff.timestamp() * 1e3),
            ),
            ("spans", Span.objects.filter(app=app, start_ns__lt=cutoff_ns)),
            ("events", BrowserEvent.objects.filter(app=app, received_at__lt=cutoff)),
            ("scores", Score.objects.filter(app=app, received_at__lt=cutoff)),
            ("sessions", BrowserSession.objects.filter(app=app, last_seen_at__lt=cutoff)),
            # Minute rollups go with the raw data; hours and days stay, so the metrics
            # and the overview keep answering for months after the raw rows are gone.
            (
                "minute rollups",
                Rollup.objects.filter(app=app, period=Rollup.Period.MINUTE, start__lt=cutoff),
            ),
            # A pending rebuild of a period whose turns and minutes are gone would
            # only empty the hour and day rows that are kept.
            ("rollup marks", DirtyRollup.objects.filter(app=app, start__lt=cutoff)),
            # The vitals and errors pages read their reports only while kept: their
            # rollups go with them, each period once wholly past the cut.
            ("event rollups", _expired_event_rollups(app, cutoff)),
            ("event rollup marks", DirtyEventRollup.objects.filter(app=app, start__lt=cutoff)),
            # Model-server metrics: the minute and five-minute rollups and old marks
            # go; hours, three and six hours and days stay, as the turns' do.
            ("metric minute rollups", _expired_metric_minutes(app, cutoff_ns)),
            (
                "metric rollup marks",
                MetricDirty.objects.filter(app=app, start_ns__lt=cutoff_ns - HOUR_NS),
            ),
        ]
        for name, queryset in plan:
            n = _delete_in_batches(queryset, batch=batch, budget=budget)
            result.deleted[name] = result.deleted.get(name, 0) + n
        n = _delete_expired_points(app, cutoff_ns, batch=batch, budget=budget)
        result.deleted["metric points"] = result.deleted.get("metric points", 0) + n
    return result
