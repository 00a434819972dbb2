"""Read-only admin for stitched traces and turns: they are rebuilt from raw rows by
every stitch, so editing one here would be overwritten (and is not allowed)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from correlator.models import Trace, Turn


class _ReadOnly(admin.ModelAdmin):
    # Big tables: no exact count on every change list.
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Trace)
class TraceAdmin(_ReadOnly):
    list_display = [
        "trace_id", "app", "state", "linked", "propagation", "propagation_cause", "span_count",
        "stitched_at", "report",
    ]  # fmt: skip
    list_filter = ["state", "linked", "propagation", "app"]
    list_select_related = ["app"]
    search_fields = ["=trace_id"]
    raw_id_fields = ["app"]

    @admin.display(description="Report")
    def report(self, obj: Trace) -> str:
        url = reverse("reports:trace", args=[obj.trace_id])
        return format_html('<a href="{}?app={}">waterfall</a>', url, obj.app.slug)


@admin.register(Turn)
class TurnAdmin(_ReadOnly):
    list_display = [
        "span_id", "trace", "app", "outcome", "model", "client_ttft_ms", "server_ttft_ms",
        "conversation_id",
    ]  # fmt: skip
    list_filter = ["outcome", "regenerated", "intent_correction"]
    list_select_related = ["app", "trace"]
    search_fields = ["=trace__trace_id", "=span_id", "=conversation_id"]
    raw_id_fields = ["app", "trace", "session"]
