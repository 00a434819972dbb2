"""Admin for applications and their members, and read-only views of raw rows."""

from __future__ import annotations

from typing import Any, TypeVar, cast

from django import forms
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import Model, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.urls import reverse_lazy
from django.utils import timezone
from django.utils.functional import cached_property

from correlator.models import Trace
from rumserver.applications import (
    ApplicationError,
    application_rotate_token,
    normalize_origin,
    set_new_keys,
)
from rumserver.models import (
    Application,
    ApplicationMember,
    BrowserEvent,
    BrowserSession,
    DirtyTrace,
    ModelPrice,
    Score,
    Span,
)
from rumserver.roles import role_in_trace

_ModelT = TypeVar("_ModelT", bound=Model)

# "View site" opens the reports (the default "/" redirects there too).
# (Lazy: the URLs are not loaded yet when the admin modules are imported.)
admin.site.site_url = cast("str", reverse_lazy("reports:overview"))
admin.site.site_header = admin.site.site_title = "llmrum administration"


def rounded(value: float | None) -> str:
    """A float for a change list: at most two decimals (1,234.57, 0.83), three
    significant digits below 0.01; "-" for none."""
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 0.01:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


class MemberInline(admin.TabularInline[ApplicationMember, Application]):
    model = ApplicationMember
    extra = 1
    raw_id_fields = ["user"]


class ApplicationForm(forms.ModelForm[Application]):
    class Meta:
        model = Application
        fields = [
            "name",
            "slug",
            "allowed_origins",
            "sample_rate",
            "retention_days",
            "store_content",
        ]

    def clean_allowed_origins(self) -> list[str]:
        origins = self.cleaned_data.get("allowed_origins") or []
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            raise forms.ValidationError('A JSON list of origins, e.g. ["https://chat.example.com"]')
        try:
            return sorted({normalize_origin(o) for o in origins})
        except ApplicationError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean_sample_rate(self) -> float:
        rate: float = self.cleaned_data["sample_rate"]
        if not 0.0 <= rate <= 1.0:
            raise forms.ValidationError("between 0 and 1")
        return rate


@admin.register(Application)
class ApplicationAdmin(admin.ModelAdmin[Application]):
    form = ApplicationForm
    list_display = [
        "name",
        "slug",
        "public_key",
        "ingest_token_prefix",
        "sample_rate",
        "created_at",
    ]
    search_fields = ["name", "slug", "public_key"]
    readonly_fields = ["public_key", "ingest_token_prefix", "created_at"]
    exclude = ["ingest_token_hash"]
    inlines = [MemberInline]
    actions = ["rotate_token"]

    def save_model(self, request: HttpRequest, obj: Application, form: Any, change: bool) -> None:
        if not change:
            token = set_new_keys(obj)
            messages.warning(
                request, f"Ingest token for {obj.slug} (shown once, copy it now): {token}"
            )
        super().save_model(request, obj, form, change)

    @admin.action(description="Rotate the ingest token (the old one stops working)")
    def rotate_token(self, request: HttpRequest, queryset: QuerySet[Application]) -> None:
        for app in queryset:
            created = application_rotate_token(slug=app.slug)
            messages.warning(
                request,
                f"New ingest token for {app.slug} (shown once, copy it now): "
                f"{created.ingest_token}",
            )


@admin.register(ApplicationMember)
class ApplicationMemberAdmin(admin.ModelAdmin[ApplicationMember]):
    list_display = ["application", "user", "created_at"]
    list_select_related = ["application", "user"]
    raw_id_fields = ["user"]


class ModelPriceForm(forms.ModelForm[ModelPrice]):
    class Meta:
        model = ModelPrice
        fields = [
            "app",
            "model",
            "input_usd_per_mtok",
            "output_usd_per_mtok",
            "cached_input_usd_per_mtok",
        ]

    def clean(self) -> dict[str, Any]:
        cleaned: dict[str, Any] = super().clean() or {}
        for name in ("input_usd_per_mtok", "output_usd_per_mtok", "cached_input_usd_per_mtok"):
            amount = cleaned.get(name)
            if amount is not None and amount < 0:
                self.add_error(name, "A price cannot be negative.")
        return cleaned


@admin.register(ModelPrice)
class ModelPriceAdmin(admin.ModelAdmin[ModelPrice]):
    """Prices are added, never edited: a new price starts now and the old one stays
    for the turns of its time (their cost was fixed when they were stitched)."""

    form = ModelPriceForm
    list_display = [
        "app",
        "model",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "cached_input_usd_per_mtok",
        "in_force_from",
    ]
    list_filter = ["app"]
    list_select_related = ["app"]
    search_fields = ["model"]
    ordering = ["app", "model", "-in_force_from"]

    def has_change_permission(self, request: HttpRequest, obj: ModelPrice | None = None) -> bool:
        return False

    def save_model(self, request: HttpRequest, obj: ModelPrice, form: Any, change: bool) -> None:
        obj.in_force_from = timezone.now()
        super().save_model(request, obj, form, change)


class CappedCountPaginator(Paginator[Model]):
    """Counts at most CAP rows: the change list's page count would otherwise be a
    COUNT(*) over millions of rows on every page view."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        # The admin's change list always paginates a QuerySet (the stubs allow any sequence).
        rows = cast("QuerySet[Model]", self.object_list)
        return rows[: self.CAP + 1].count()


class ReadOnlyAdmin(admin.ModelAdmin[_ModelT]):
    """Raw rows come from ingest only; big tables skip the exact count."""

    show_full_result_count = False
    paginator = CappedCountPaginator

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(BrowserSession)
class BrowserSessionAdmin(ReadOnlyAdmin[BrowserSession]):
    list_display = ["session_id", "app", "browser", "os", "device_class", "is_bot", "last_seen_at"]
    list_filter = ["device_class", "is_bot"]
    list_select_related = ["app"]
    search_fields = ["session_id__exact", "user_id__exact"]
    raw_id_fields = ["app"]


@admin.register(BrowserEvent)
class BrowserEventAdmin(ReadOnlyAdmin[BrowserEvent]):
    list_display = ["event_id", "type", "name", "trace_id", "app", "received_at"]
    list_filter = ["type"]
    list_select_related = ["app"]
    search_fields = ["trace_id__exact"]  # indexed; "=" (iexact) and an OR would scan
    raw_id_fields = ["app", "session"]


@admin.register(Span)
class SpanAdmin(ReadOnlyAdmin[Span]):
    list_display = ["trace_id", "span_id", "trace_role", "service", "name", "app", "received_at"]
    list_select_related = ["app"]
    search_fields = ["trace_id__exact"]  # indexed; "=" (iexact) and an OR would scan
    raw_id_fields = ["app"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Span]:
        # A span's role is its trace's decision (rumserver.roles): the stitched trace's
        # roles, one index probe a row shown.
        roles = Trace.objects.filter(app_id=OuterRef("app_id"), trace_id=OuterRef("trace_id"))
        queryset = super().get_queryset(request)
        return queryset.annotate(trace_roles=Subquery(roles.values("roles")[:1]))

    @admin.display(description="role")
    def trace_role(self, span: Any) -> str:
        return role_in_trace(span, span.trace_roles or {})


@admin.register(DirtyTrace)
class DirtyTraceAdmin(ReadOnlyAdmin[DirtyTrace]):
    list_display = ["trace_id", "app", "first_marked_at", "last_marked_at"]
    list_select_related = ["app"]
    search_fields = ["trace_id__exact"]


@admin.register(Score)
class ScoreAdmin(ReadOnlyAdmin[Score]):
    list_display = ["trace_id", "name", "shown_value", "app", "received_at"]
    list_filter = ["name"]
    list_select_related = ["app"]
    search_fields = ["trace_id__exact"]
    raw_id_fields = ["app"]

    @admin.display(description="value", ordering="value")
    def shown_value(self, score: Score) -> str:
        return rounded(score.value)
