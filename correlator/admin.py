"""Read-only admin for stitched traces and turns: they are rebuilt from raw rows by
every stitch, so editing one here would be overwritten (and is not allowed)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from correlator.models import Trace, Turn
from rumserver.admin import ReadOnlyAdmin, rounded
from rumserver.models import Application

# Stitched rows are listed newest first by time. Unnarrowed (no search, no filter),
# a change list (only it: the change page's lookup is not cut) orders just the
# newest RECENT_ROWS rows by id: sorting every row of a table of millions by time
# would read them all (the time indexes lead with the application). The sweep
# writes a trace and its turn when they end, so the newest ids hold the newest
# traces; the capped count pages through no more anyway.
RECENT_ROWS = 10_000
UNNARROWING = {"p", "o"}  # the page and the column order


def _recent_only(request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
    if any(key not in UNNARROWING for key in request.GET):
        return queryset
    newest = queryset.model.objects.order_by("-id").values_list("id", flat=True).first()
    if newest is None:
        return queryset
    # Both bounds: a one-sided range looks like a third of the table to a planner
    # without fresh statistics (a scan); a closed one is a pk range scan.
    return queryset.filter(id__gt=newest - RECENT_ROWS, id__lte=newest)


def _app_ids() -> list[int]:
    """Every application id, for ``app_id = ANY(...)``: the stitched tables' indexes
    lead with the application, and Django's default search (``UPPER(col) = UPPER(q)``
    for "=" fields) could use none of them, scanning millions of rows per search."""
    return list(Application.objects.order_by().values_list("id", flat=True)[:10_000])


class OutcomeFilter(admin.SimpleListFilter):
    """The four outcomes as fixed choices (a plain field filter asks the database for
    its distinct values: a scan of every turn)."""

    title = "outcome"
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(o, o) for o in ("completed", "stopped", "abandoned", "error")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Turn]) -> QuerySet[Turn]:
        return queryset.filter(outcome=self.value()) if self.value() else queryset


@admin.register(Trace)
class TraceAdmin(ReadOnlyAdmin[Trace]):
    list_display = [
        "trace_id",
        "app",
        "state",
        "linked",
        "propagation",
        "propagation_cause",
        "span_count",
        "stitched_at",
        "report",
    ]
    list_filter = ["state", "linked", "propagation", "app"]
    list_select_related = ["app"]
    ordering = ["-start_ms", "-id"]
    search_fields = ["trace_id"]  # shows the search box; get_search_results does the search
    search_help_text = "An exact trace id (32 hex digits)."
    raw_id_fields = ["app"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Trace], search_term: str
    ) -> tuple[QuerySet[Trace], bool]:
        term = search_term.strip().lower()
        if not term:
            return _recent_only(request, queryset), False
        return queryset.filter(app_id__in=_app_ids(), trace_id=term), False

    @admin.display(description="Report")
    def report(self, obj: Trace) -> str:
        url = reverse("reports:trace", args=[obj.trace_id])
        return format_html('<a href="{}?app={}">waterfall</a>', url, obj.app.slug)


@admin.register(Turn)
class TurnAdmin(ReadOnlyAdmin[Turn]):
    list_display = [
        "span_id",
        "trace",
        "app",
        "outcome",
        "model",
        "client_ttft",
        "server_ttft",
        "conversation_id",
    ]
    list_filter = [OutcomeFilter, "regenerated", "intent_correction"]
    list_select_related = ["app", "trace"]
    ordering = ["-t_send_ms", "-id"]
    search_fields = ["span_id"]  # shows the search box; get_search_results does the search
    search_help_text = "An exact trace id, browser span id or conversation id."
    raw_id_fields = ["app", "trace", "session"]

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Turn], search_term: str
    ) -> tuple[QuerySet[Turn], bool]:
        term = search_term.strip()
        if not term:
            return _recent_only(request, queryset), False
        apps = _app_ids()
        traces = list(
            Trace.objects.filter(app_id__in=apps, trace_id=term.lower()).values_list(
                "id", flat=True
            )
        )
        found = (
            Q(trace_id__in=traces)
            | Q(app_id__in=apps, span_id=term.lower())
            | Q(app_id__in=apps, conversation_id=term)
        )
        return queryset.filter(found), False

    @admin.display(description="client TTFT (ms)", ordering="client_ttft_ms")
    def client_ttft(self, turn: Turn) -> str:
        return rounded(turn.client_ttft_ms)

    @admin.display(description="server TTFT (ms)", ordering="server_ttft_ms")
    def server_ttft(self, turn: Turn) -> str:
        return rounded(turn.server_ttft_ms)
