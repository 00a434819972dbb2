"""Thin views: parse the query (``forms``), build the page (``pages``), render."""

from __future__ import annotations

from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone

from correlator import selectors
from correlator.models import Turn
from correlator.reports import forms
from correlator.reports.pages import errors as errors_page
from correlator.reports.pages import overview as overview_page
from correlator.reports.pages import propagation as propagation_page
from correlator.reports.pages import session as session_page
from correlator.reports.pages import sessions as sessions_page
from correlator.reports.pages import trace as trace_page
from correlator.reports.pages import traces as traces_page
from correlator.reports.pages import vitals as vitals_page
from correlator.reports.pages.getting_started import getting_started
from rumserver.models import Application, BrowserSession


def _base(
    request: HttpRequest, page: str, apps: list[Application], app: object, **extra: object
) -> dict[str, object]:
    return {"page": page, "apps": apps, "app": app, "presets": list(forms.PRESETS), **extra}


@login_required
def overview(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    window, errors = forms.time_range(request.GET, now=timezone.now())
    bots, bot_errors = forms.bots_included(request.GET)
    report = overview_page.overview(app=app, window=window, bots=bots) if app else None
    context = _base(
        request, "overview", apps, app, window=window, errors=errors + bot_errors, report=report
    )
    if report is not None and app is not None:
        context["percentiles_note"] = report.percentiles_note
        base_url = request.build_absolute_uri("/").rstrip("/")
        context["getting_started"] = getting_started(app=app, base_url=base_url)
        # The same page with bots counted the other way (the default leaves them out).
        flipped = {"app": app.slug, **window.query(), **({} if bots else {"bots": "include"})}
        context["bots_toggle_url"] = f"?{urlencode(flipped)}"
    return render(request, "reports/overview.html", context)


@login_required
def traces(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    filters, errors = forms.trace_filters(request.GET, now=timezone.now())
    trace_id = forms.trace_id_searched(filters)
    if app is not None and trace_id is not None:
        if selectors.trace_detail(user=request.user, trace_id=trace_id, app_slug=app.slug):
            # An exact trace id: its page rather than a list of one.
            return redirect(
                f"{reverse('reports:trace', args=[trace_id])}?{urlencode({'app': app.slug})}"
            )
    cursor = forms.parse_cursor(request.GET.get("cursor", ""))
    rows, next_cursor = (
        traces_page.trace_rows(user=request.user, app=app, filters=filters, cursor=cursor)
        if app
        else ([], "")
    )
    query = {"app": app.slug, **filters.query()} if app else {}
    next_url = f"?{urlencode({**query, 'cursor': next_cursor})}" if next_cursor else ""
    context = _base(
        request,
        "traces",
        apps,
        app,
        filters=filters,
        errors=errors,
        rows=rows,
        outcomes=Turn.OUTCOMES,
        devices=BrowserSession.Device.values,
        next_url=next_url,
        first_url=f"?{urlencode(query)}",
        paged=cursor is not None,
    )
    return render(request, "reports/traces.html", context)


@login_required
def trace(request: HttpRequest, trace_id: str) -> HttpResponse:
    found = trace_page.find_trace(
        user=request.user, trace_id=trace_id, app_slug=request.GET.get("app")
    )
    context = _base(request, "traces", [], found.app, **trace_page.trace_view(found))
    return render(request, "reports/trace.html", context)


@login_required
def sessions(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    window, errors = forms.time_range(request.GET, now=timezone.now(), default="7d")
    cursor = sessions_page.parse_cursor(request.GET.get("cursor", ""))
    rows, next_cursor = (
        sessions_page.session_rows(app=app, window=window, cursor=cursor) if app else ([], "")
    )
    query = {"app": app.slug, **window.query()} if app else {}
    next_url = f"?{urlencode({**query, 'cursor': next_cursor})}" if next_cursor else ""
    context = _base(
        request,
        "sessions",
        apps,
        app,
        window=window,
        errors=errors,
        rows=rows,
        next_url=next_url,
        first_url=f"?{urlencode(query)}",
        paged=cursor is not None,
    )
    return render(request, "reports/sessions.html", context)


@login_required
def session(request: HttpRequest, key: str) -> HttpResponse:
    found = session_page.find_session(user=request.user, key=key, app_slug=request.GET.get("app"))
    context = _base(request, "sessions", [], found.app, **session_page.session_view(found))
    return render(request, "reports/session.html", context)


@login_required
def propagation(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    window, errors = forms.time_range(request.GET, now=timezone.now())
    summaries = [propagation_page.propagation_summary(app=a, window=window) for a in apps[:20]]
    if app is not None and all(s["app"].pk != app.pk for s in summaries):
        summaries.append(propagation_page.propagation_summary(app=app, window=window))
    selected = next((s for s in summaries if app and s["app"].pk == app.pk), None)
    unlinked = propagation_page.unlinked_traces(app=app, window=window) if app else []
    context = _base(
        request,
        "propagation",
        apps,
        app,
        window=window,
        errors=errors,
        summaries=summaries,
        selected=selected,
        unlinked=unlinked,
    )
    return render(request, "reports/propagation.html", context)


@login_required
def vitals(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    window, errors = forms.time_range(request.GET, now=timezone.now())
    bots, bot_errors = forms.bots_included(request.GET)
    path = request.GET.get("path", "")[:2048]
    report = (
        vitals_page.vitals_report(app=app, window=window, path=path, bots=bots) if app else None
    )
    context = _base(
        request, "vitals", apps, app, window=window, errors=errors + bot_errors, report=report
    )
    context["bots"], context["bots_toggle_url"] = bots, _bots_toggle(request, bots)
    context["percentiles_note"] = vitals_page.PERCENTILES_NOTE
    return render(request, "reports/vitals.html", context)


def _bots_toggle(request: HttpRequest, bots: bool) -> str:
    """The same page with bot sessions counted the other way (the default leaves
    them out)."""
    query = request.GET.copy()
    query.pop("bots", None)
    if not bots:
        query["bots"] = "include"
    return f"?{query.urlencode()}"


@login_required
def errors(request: HttpRequest) -> HttpResponse:
    apps, app = forms.choose_app(user=request.user, slug=request.GET.get("app"))
    window, range_errors = forms.time_range(request.GET, now=timezone.now())
    bots, bot_errors = forms.bots_included(request.GET)
    groups = errors_page.error_groups(app=app, window=window, bots=bots) if app else []
    context = _base(
        request, "errors", apps, app, window=window, errors=range_errors + bot_errors, groups=groups
    )
    context["bots"], context["bots_toggle_url"] = bots, _bots_toggle(request, bots)
    return render(request, "reports/errors.html", context)
