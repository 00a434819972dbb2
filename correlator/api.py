"""Read API (DESIGN.md §7): DRF views with an input serializer for the query and
an output serializer for the answer; the queries live in selectors."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from correlator import metrics, selectors
from correlator.models import Trace, Turn
from rumserver.models import Span


class SpanOutput(serializers.Serializer):
    span_id = serializers.CharField()
    parent_span_id = serializers.CharField()
    role = serializers.CharField()
    name = serializers.CharField()
    service = serializers.CharField()
    start_ms = serializers.SerializerMethodField()
    end_ms = serializers.SerializerMethodField()
    attributes = serializers.JSONField()

    def get_start_ms(self, span: Span) -> float:
        return span.start_ns / 1e6

    def get_end_ms(self, span: Span) -> float:
        return span.end_ns / 1e6


class TurnOutput(serializers.Serializer):
    session_id = serializers.CharField(source="session.session_id")
    conversation_id = serializers.CharField()
    turn_index = serializers.IntegerField(allow_null=True)
    outcome = serializers.CharField()
    regenerated = serializers.BooleanField()
    regenerate_of = serializers.SerializerMethodField()
    client_ttft_ms = serializers.FloatField(allow_null=True)
    server_ttft_ms = serializers.FloatField(allow_null=True)
    model_ttft_ms = serializers.FloatField(allow_null=True)
    queue_ms = serializers.FloatField(allow_null=True)
    network_overhead_ms = serializers.FloatField(allow_null=True)
    tbt_p50_ms = serializers.FloatField(allow_null=True)
    tbt_p95_ms = serializers.FloatField(allow_null=True)
    tbt_max_ms = serializers.FloatField(allow_null=True)
    tpot_ms = serializers.FloatField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    input_tokens = serializers.IntegerField(allow_null=True)
    model = serializers.CharField()
    browser = serializers.CharField(source="session.browser")
    os = serializers.CharField(source="session.os")
    device = serializers.CharField(source="session.device_class")

    def get_regenerate_of(self, turn: Turn) -> str | None:
        return turn.regenerate_of or None


def _turn_of(trace: Trace) -> Turn | None:
    try:
        return trace.turn
    except Turn.DoesNotExist:
        return None


class _TraceFields(serializers.Serializer):
    """The fields DESIGN.md §7 gives a trace, turn included; spans are the detail's."""

    trace_id = serializers.CharField()
    app = serializers.CharField(source="app.slug")
    state = serializers.CharField()
    linked = serializers.BooleanField()
    clock_skew_ms = serializers.FloatField()
    turn = serializers.SerializerMethodField()

    def get_turn(self, trace: Trace) -> dict[str, Any] | None:
        turn = _turn_of(trace)
        return TurnOutput(turn).data if turn is not None else None


class TraceSummaryOutput(_TraceFields):
    """A list item: the trace fields plus its time span and propagation health."""

    start_ms = serializers.FloatField()
    end_ms = serializers.FloatField()
    span_count = serializers.IntegerField()
    propagation = serializers.CharField()


class TraceOutput(_TraceFields):
    """Exactly DESIGN.md §7's fields."""

    spans = serializers.SerializerMethodField()

    def get_spans(self, trace: Trace) -> list[dict[str, Any]]:
        return SpanOutput(selectors.trace_spans(trace), many=True).data


class TraceDetailApi(APIView):
    @extend_schema(responses=TraceOutput)
    def get(self, request: Request, trace_id: str) -> Response:
        trace = selectors.trace_detail(
            user=request.user, trace_id=trace_id.lower(), app_slug=request.query_params.get("app")
        )
        if trace is None:
            raise NotFound("no stitched trace with this id in your applications (yet)")
        return Response(TraceOutput(trace).data)


class TraceListInput(serializers.Serializer):
    app = serializers.SlugField(required=False)
    outcome = serializers.ChoiceField(
        choices=["completed", "stopped", "abandoned", "error"], required=False
    )
    model = serializers.CharField(required=False, max_length=128)
    min_client_ttft_ms = serializers.FloatField(required=False, min_value=0)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)


class NewestFirst(CursorPagination):
    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"
    ordering = ("-start_ms", "-id")


class TraceListApi(APIView):
    @extend_schema(parameters=[TraceListInput], responses=TraceSummaryOutput(many=True))
    def get(self, request: Request) -> Response:
        query = TraceListInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        traces = selectors.trace_list(user=request.user, **query.validated_data)
        paginator = NewestFirst()
        page = paginator.paginate_queryset(traces, request, view=self)
        return paginator.get_paginated_response(TraceSummaryOutput(page, many=True).data)


class MetricsInput(serializers.Serializer):
    app = serializers.SlugField(required=False)
    since = serializers.DateTimeField(required=False)
    until = serializers.DateTimeField(required=False)
    group_by = serializers.ChoiceField(choices=list(selectors.GROUP_COLUMNS), required=False)


class PercentilesOutput(serializers.Serializer):
    p50 = serializers.FloatField(allow_null=True)
    p75 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class RatesOutput(serializers.Serializer):
    stop_rate = serializers.FloatField(allow_null=True)
    regenerate_rate = serializers.FloatField(allow_null=True)
    abandonment_rate = serializers.FloatField(allow_null=True)
    abandonment_before_first_token_rate = serializers.FloatField(allow_null=True)
    error_rate = serializers.FloatField(allow_null=True)
    first_response_accuracy = serializers.FloatField(allow_null=True)
    hallucination_rate = serializers.FloatField(allow_null=True)


class MetricsFiguresOutput(serializers.Serializer):
    """``analytics.summarize``'s figures (documentation only: the view builds the dict)."""

    turns = serializers.IntegerField()
    sessions = serializers.IntegerField()
    conversations = serializers.IntegerField()
    client_ttft_ms = PercentilesOutput()
    server_ttft_ms = PercentilesOutput()
    model_ttft_ms = PercentilesOutput()
    queue_ms = PercentilesOutput()
    tbt_ms = PercentilesOutput()
    tpot_ms = PercentilesOutput()
    input_tokens = serializers.IntegerField()
    output_tokens = serializers.IntegerField()
    turns_per_session = serializers.FloatField(allow_null=True)
    intent_corrections_per_conversation = serializers.FloatField(allow_null=True)
    rates = RatesOutput()


class MetricsGroupOutput(MetricsFiguresOutput):
    key = serializers.CharField()


class MetricsOutput(MetricsFiguresOutput):
    app = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    groups = MetricsGroupOutput(many=True)


class MetricsApi(APIView):
    """Turn, session and conversation figures for one application and time range
    (default: the last 24 hours including the current minute). Percentiles are
    nearest-rank and exact; ``tbt_ms`` is over each turn's median gap."""

    @extend_schema(parameters=[MetricsInput], responses=MetricsOutput)
    def get(self, request: Request) -> Response:
        query = MetricsInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        apps = selectors.visible_applications(request.user)
        if params.get("app"):
            app = apps.filter(slug=params["app"]).first()
        else:
            only = list(apps[:2])
            app = only[0] if len(only) == 1 else None
            if app is None:
                raise ValidationError({"app": "which application? (?app=<slug>)"})
        if app is None:
            raise NotFound("no such application among yours")
        now = timezone.now()
        until = params.get("until") or now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        since = params.get("since") or until - timedelta(hours=24)
        if since >= until:
            raise ValidationError({"since": "must be before until"})
        body = {"app": app.slug, "since": since.isoformat(), "until": until.isoformat()}
        body.update(
            metrics.window_metrics(
                app=app, since=since, until=until, group_by=params.get("group_by")
            )
        )
        return Response(body)
