from __future__ import annotations

from django.contrib import admin
from django.db import models

from correlator.alerts.models import AlertEvent, AlertRule
from rumserver.admin import rounded


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin[AlertRule]):
    list_display = ("name", "application", "figure", "operator", "threshold", "state", "enabled")
    list_filter = ("enabled", "state", "application")
    list_select_related = ("application",)
    readonly_fields = ("state", "created_at")
    # A webhook address typed without a scheme is https (Django 6's default; silences 5.x).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}


@admin.register(AlertEvent)
class AlertEventAdmin(admin.ModelAdmin[AlertEvent]):
    list_display = ("rule", "state", "shown_value", "turns", "created_at", "notified_at")
    list_filter = ("state",)
    ordering = ("-created_at", "-id")
    list_select_related = ("rule", "rule__application")
    raw_id_fields = ("rule",)
    show_full_result_count = False
    readonly_fields = [f.name for f in AlertEvent._meta.fields]

    @admin.display(description="value", ordering="value")
    def shown_value(self, event: AlertEvent) -> str:
        return rounded(event.value)
