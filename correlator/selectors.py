"""Read queries behind the API and the report pages. Every query is limited to
the applications a user may see, and reads stitched rows through indexes."""

from __future__ import annotations

from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from correlator.models import Trace
from rumserver.models import Application, Span


def visible_applications(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Application]:
    """Staff see every application; others those they are members of."""
    if not user.is_authenticated:
        return Application.objects.none()
    if getattr(user, "is_staff", False):
        return Application.objects.all()
    return Application.objects.filter(members=user)


def trace_detail(*, user: AbstractBaseUser | AnonymousUser, trace_id: str,
                 app_slug: str | None = None) -> Trace | None:  # fmt: skip
    traces = Trace.objects.filter(app__in=visible_applications(user), trace_id=trace_id)
    if app_slug:
        traces = traces.filter(app__slug=app_slug)
    found = list(traces.select_related("app", "turn", "turn__session")[:2])
    return found[0] if len(found) == 1 else None


def trace_spans(trace: Trace) -> list[Span]:
    return list(
        Span.objects.filter(app_id=trace.app_id, trace_id=trace.trace_id).order_by(
            "start_ns", "span_id"
        )
    )


def trace_list(
    *,
    user: AbstractBaseUser | AnonymousUser,
    app_slug: str | None = None,
    outcome: str | None = None,
    model: str | None = None,
    min_client_ttft_ms: float | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Trace]:
    """Newest first by the trace's start (the browser span's skew-corrected send time,
    else its earliest span); every state and outcome unless filtered."""
    traces = Trace.objects.filter(app__in=visible_applications(user))
    if app_slug:
        traces = traces.filter(app__slug=app_slug)
    if outcome:
        traces = traces.filter(turn__outcome=outcome)
    if model:
        traces = traces.filter(turn__model=model)
    if min_client_ttft_ms is not None:
        traces = traces.filter(turn__client_ttft_ms__gte=min_client_ttft_ms)
    if since:
        traces = traces.filter(start_ms__gte=since.timestamp() * 1000)
    if until:
        traces = traces.filter(start_ms__lt=until.timestamp() * 1000)
    return traces.select_related("app", "turn", "turn__session").order_by("-start_ms", "-id")
