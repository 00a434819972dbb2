"""Deleting raw and stitched data past each application's retention days, in
bounded batches so a large purge never holds long locks or one huge transaction."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import Model, QuerySet

from correlator.models import DirtyRollup, Rollup, Trace
from rumserver.models import Application, BrowserEvent, BrowserSession, Score, Span

BATCH = 5_000


@dataclass
class RetentionResult:
    deleted: dict[str, int] = field(default_factory=dict)


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


def retention_run(*, now: datetime, batch: int = BATCH, budget: int = 1_000_000) -> RetentionResult:
    """One pass over every application; what the budget leaves goes next time."""
    result = RetentionResult()
    for app in Application.objects.all():
        cutoff = now - timedelta(days=app.retention_days)
        cutoff_ns = int(cutoff.timestamp() * 1e9)
        plan: list[tuple[str, QuerySet[Model]]] = [
            # Stitched traces first (turns go with them), then what they were made of.
            ("traces", Trace.objects.filter(app=app, last_received_at__lt=cutoff)),
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
        ]
        for name, queryset in plan:
            n = _delete_in_batches(queryset, batch=batch, budget=budget)
            result.deleted[name] = result.deleted.get(name, 0) + n
    return result
