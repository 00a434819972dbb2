"""``/reports/alerts/``: an application's firing and resolved events, newest first,
each linked to the trace list of its window. Rule names are users' text: only the
template places them, escaped."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from correlator.alerts.links import window_traces_url
from correlator.alerts.models import AlertEvent, AlertRule
from correlator.reports import forms
from rumserver.models import Application

EVENT_LIMIT = 200  # the newest events shown


@dataclass(frozen=True)
class EventRow:
    event: AlertEvent
    traces_url: str


def alert_event_rows(*, app: Application) -> list[EventRow]:
    events = (
        AlertEvent.objects.filter(rule__application=app)
        .select_related("rule")
        .order_by("-created_at", "-pk")[:EVENT_LIMIT]
    )
    return [
        EventRow(e, window_traces_url(app_slug=app.slug, since=e.since, until=e.until))
        for e in events
    ]


@login_required
def alerts(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    rows = alert_event_rows(app=app) if app else []
    rules = list(AlertRule.objects.filter(application=app).order_by("name")) if app else []
    context = {"page": "alerts", "apps": apps, "app": app, "rows": rows, "rules": rules}
    return render(request, "reports/alerts.html", context)
