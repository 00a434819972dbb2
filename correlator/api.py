"""Read API (DESIGN.md §7): DRF views with an input serializer for the query and
an output serializer for the answer; the queries live in selectors. Every answer a
view can give, errors included, is declared on it for the OpenAPI schema."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.utils import timezone
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
)
from rest_framework import serializers
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from correlator import selectors
from correlator.analytics import figures
from correlator.analytics.exact import GROUP_COLUMNS
from correlator.epoch import EPOCH
from correlator.models import Trace, Turn
from rumserver.models import Application, BrowserSession, Score, Span

NO_SUCH_APP = "no such application among yours"

# --- answers ---------------------------------------------------------------------


class SpanOutput(serializers.Serializer[Span]):
    span_id = serializers.CharField()
    parent_span_id = serializers.CharField()
    role = serializers.ChoiceField(choices=Span.Role.values)
    name = serializers.CharField()
    service = serializers.CharField()
    start_ms = serializers.SerializerMethodField()
    end_ms = serializers.SerializerMethodField()
    attributes = serializers.DictField()

    def get_start_ms(self, span: Span) -> float:
        return span.start_ns / 1e6

    def get_end_ms(self, span: Span) -> float:
        return span.end_ns / 1e6


class TurnOutput(serializers.Serializer[Turn]):
    session_id = serializers.CharField(source="session.session_id")
    conversation_id = serializers.CharField()
    turn_index = serializers.IntegerField(allow_null=True)
    outcome = serializers.ChoiceField(choices=Turn.OUTCOMES)
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
    model = serializers.SerializerMethodField()
    browser = serializers.CharField(source="session.browser")
    os = serializers.CharField(source="session.os")
    device = serializers.CharField(source="session.device_class")

    def get_regenerate_of(self, turn: Turn) -> str | None:
        return turn.regenerate_of or None

    def get_model(self, turn: Turn) -> str | None:
        """The model the spans or the stream named; null when none did."""
        return turn.model or None  # stored as "" (Django's empty text), never a model's name


class _TraceFields(serializers.Serializer[Trace]):
    """The fields DESIGN.md §7 gives a trace, turn included; spans are the detail's."""

    trace_id = serializers.CharField()
    app = serializers.CharField(source="app.slug")
    state = serializers.ChoiceField(choices=Trace.State.values)
    linked = serializers.BooleanField()
    clock_skew_ms = serializers.FloatField()
    clock_skew_uncertainty_ms = serializers.FloatField(
        allow_null=True,
        help_text="Half the width of the interval the skew was taken from (DESIGN.md §10.3); "
        "null when only beacons bound it (from above) or there is no browser span.",
    )
    clock_skew_source = serializers.CharField(
        source="skew_source",
        help_text="server_timing (Server-Timing echoes bound it), beacon (beacon deliveries "
        "only), none; +tightened when the browser span was then moved to contain the "
        "gateway's; empty without a browser span.",
    )
    turn = serializers.SerializerMethodField()

    @extend_schema_field(TurnOutput(allow_null=True))
    def get_turn(self, trace: Trace) -> dict[str, Any] | None:
        turn = trace.turn_or_none
        return TurnOutput(turn).data if turn is not None else None


class TraceSummaryOutput(_TraceFields):
    """A list item: the trace fields plus its time span and propagation health."""

    start_ms = serializers.FloatField()
    end_ms = serializers.FloatField()
    span_count = serializers.IntegerField()
    propagation = serializers.ChoiceField(
        choices=Trace.Propagation.values,
        help_text="Empty when the trace context travelled from the browser to the servers.",
    )


class ScoreOutput(serializers.Serializer[Score]):
    """A score posted for the trace (``POST /api/v1/scores``)."""

    name = serializers.CharField()
    value = serializers.FloatField()
    comment = serializers.CharField()
    created = serializers.DateTimeField(source="received_at", help_text="When it was received.")


class TraceOutput(_TraceFields):
    """DESIGN.md §7's fields and the trace's scores (§10.5), oldest first."""

    spans = serializers.SerializerMethodField()
    scores = serializers.SerializerMethodField()

    @extend_schema_field(SpanOutput(many=True))
    def get_spans(self, trace: Trace) -> list[dict[str, Any]]:
        # many=True makes a ListSerializer of a list, whose data is a list; drf-stubs type
        # the call as the single serializer (one instance, data a dict). Also below.
        spans = selectors.trace_spans(trace)
        return SpanOutput(spans, many=True).data  # type: ignore[arg-type, return-value]

    @extend_schema_field(ScoreOutput(many=True))
    def get_scores(self, trace: Trace) -> list[dict[str, Any]]:
        scores = selectors.trace_scores(trace)
        return ScoreOutput(scores, many=True).data  # type: ignore[arg-type, return-value]


class ErrorOutput(serializers.Serializer[dict[str, Any]]):
    """DRF's answer to a request refused as a whole (401, 404, 406)."""

    detail = serializers.CharField()


class QueryErrorsOutput(serializers.Serializer[dict[str, Any]]):
    """A 400: each query parameter at fault with what is wrong with it. Its schema is
    ``QueryErrorsSchema``'s (a map, which a serializer's fields cannot say)."""


class QueryErrorsSchema(OpenApiSerializerExtension):
    target_class = QueryErrorsOutput

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "type": "object",
            "description": "Query parameter name -> what is wrong with its value.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
            "minProperties": 1,
        }


_WWW_AUTHENTICATE = OpenApiParameter(
    "WWW-Authenticate",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    response=[401],
    required=True,
    description="`Token`: how to authenticate.",
)


BAD_QUERY = "A query parameter's value is invalid; in plain text, a NUL in the URL."


def _answers(ok: Any, *, not_found: str) -> dict[Any, Any]:
    """Every answer of a read operation: ``ok`` and the refusals all of them share."""
    # Media types on every key: drf-spectacular takes the lowest key as the main answer
    # (a list's, to page it), and "(200, ...)" sorts before "(400, ...)" only so.
    return {
        (200, "application/json"): ok,
        (400, "application/json"): OpenApiResponse(QueryErrorsOutput, description=BAD_QUERY),
        # rumserver.nul_guard refuses a NUL in the URL before any view runs.
        (400, "text/plain"): OpenApiResponse(OpenApiTypes.STR, description=BAD_QUERY),
        (401, "application/json"): OpenApiResponse(
            ErrorOutput, description="No valid token or session."
        ),
        (404, "application/json"): OpenApiResponse(ErrorOutput, description=not_found),
        (406, "application/json"): OpenApiResponse(
            ErrorOutput, description="The Accept header asks for no JSON."
        ),
    }


class ReadApiSchema(AutoSchema):
    """DRF reads an optional query parameter left empty (``?outcome=``) as left out,
    as HTML forms send them; OpenAPI says so with ``allowEmptyValue``."""

    def get_operation(self, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
        operation = super().get_operation(*args, **kwargs)
        for parameter in (operation or {}).get("parameters", []):
            if parameter["in"] == "query" and not parameter.get("required"):
                parameter["allowEmptyValue"] = True
        return operation


# --- queries -----------------------------------------------------------------------


class FiniteFloatField(serializers.FloatField):
    """A number, without ``nan`` and ``inf`` (which ``float()`` reads)."""

    def to_internal_value(self, data: Any) -> float:
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            self.fail("invalid")
        return value


EARLIEST = EPOCH
LATEST = datetime(2100, 1, 1, tzinfo=UTC)


class InstantField(serializers.DateTimeField):
    """An ISO 8601 date and time (UTC when it names no offset) from 1970 to 2099.

    No data is older than the epoch. The bounds also keep a window's arithmetic
    inside the years ``datetime`` can hold (``until`` in year 1 less a day was a 500)
    and its rollup plan to tens of thousands of days (years 1 to 9999 took seconds)."""

    def to_internal_value(self, value: Any) -> datetime:
        moment = super().to_internal_value(value)
        if not EARLIEST <= moment < LATEST:
            raise serializers.ValidationError(
                f"must be from {EARLIEST.isoformat()} to before {LATEST.isoformat()}"
            )
        return moment


class AttributeField(serializers.CharField):
    """``key:value`` of a span attribute, as (key, value); the key is up to the first
    colon (attribute keys have none; values may)."""

    default_error_messages = {"format": "must be key:value, e.g. http.route:/api/chat"}

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=512, **kwargs)

    def to_internal_value(self, data: Any) -> tuple[str, str]:  # type: ignore[override]
        text = super().to_internal_value(data)
        key, colon, value = text.partition(":")
        if not colon or not key.strip():
            self.fail("format")
        return key.strip(), value


class TimeRangeInput(serializers.Serializer[dict[str, Any]]):
    since = InstantField(required=False, help_text="ISO 8601, inclusive; years 1970 to 2099.")
    until = InstantField(required=False, help_text="ISO 8601, exclusive; years 1970 to 2099.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "since" in attrs and "until" in attrs and attrs["since"] >= attrs["until"]:
            raise serializers.ValidationError({"since": "must be before until"})
        return attrs


def _named_application(user: AbstractBaseUser | AnonymousUser, slug: str) -> Application:
    """The user's application of this slug. One they may not see is not found, like
    one that does not exist: an answer never tells whether another team's exists."""
    app = selectors.visible_applications(user).filter(slug=slug).first()
    if app is None:
        raise NotFound(NO_SUCH_APP)
    return app


def requested_application(user: AbstractBaseUser | AnonymousUser, slug: str | None) -> Application:
    """The application ``?app=`` names, or else the caller's only one."""
    if slug:
        return _named_application(user, slug)
    only = list(selectors.visible_applications(user)[:2])
    if len(only) != 1:
        raise ValidationError({"app": ["which application? (?app=<slug>)"]})
    return only[0]


# --- GET /api/v1/traces/<trace_id> -------------------------------------------------


class TraceDetailApi(APIView):
    schema = ReadApiSchema()

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "trace_id",
                OpenApiTypes.STR,
                OpenApiParameter.PATH,
                pattern="^[0-9a-fA-F]{32}$",
                description="W3C trace id, 32 hex digits.",
            ),
            OpenApiParameter(
                "app",
                OpenApiTypes.STR,
                description="Application slug, for a trace id found in more than one.",
            ),
            _WWW_AUTHENTICATE,
        ],
        responses=_answers(
            TraceOutput,
            not_found="No stitched trace with this id in your applications (yet), or in "
            "more than one of them and no `app` given.",
        ),
    )
    def get(self, request: Request, trace_id: str) -> Response:
        trace = selectors.trace_detail(
            user=request.user, trace_id=trace_id.lower(), app_slug=request.query_params.get("app")
        )
        if trace is None:
            raise NotFound("no stitched trace with this id in your applications (yet)")
        return Response(TraceOutput(trace).data)


# --- GET /api/v1/traces ------------------------------------------------------------


class TraceListInput(TimeRangeInput):
    """The filters; each one left out does not filter."""

    app = serializers.SlugField(required=False, help_text="Application slug.")
    q = serializers.CharField(
        required=False,
        max_length=128,
        help_text="A trace id, session id, conversation id or user id: the traces it names.",
    )
    outcome = serializers.ChoiceField(choices=Turn.OUTCOMES, required=False)
    model = serializers.CharField(
        required=False, max_length=128, trim_whitespace=False, help_text="Exact model name."
    )
    browser = serializers.CharField(
        required=False, max_length=64, help_text="The session's browser, e.g. Chrome."
    )
    os = serializers.CharField(
        required=False, max_length=64, help_text="The session's operating system, e.g. iOS."
    )
    device = serializers.ChoiceField(
        choices=BrowserSession.Device.values, required=False, help_text="The device class."
    )
    min_client_ttft_ms = FiniteFloatField(required=False, min_value=0)
    score = serializers.CharField(
        required=False, max_length=64, help_text="A score name the trace carries."
    )
    attr = AttributeField(
        required=False,
        help_text="`key:value`: a span of the trace has this attribute with this value "
        "(as text, or as the number or boolean it reads as).",
    )


class NewestFirst(CursorPagination):
    """Keyset pages newest first; a bad ``page_size`` or ``cursor`` is a 400 rather
    than DRF's silent default size and 404."""

    page_size = 50
    max_page_size = 500
    page_size_query_param = "page_size"
    ordering = ("-start_ms", "-id")
    invalid_cursor_message = "invalid cursor: follow an answer's next or previous link"

    def get_page_size(self, request: Request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if not raw:  # left out or empty, like the filters
            return self.page_size
        field = serializers.IntegerField(min_value=1, max_value=self.max_page_size)
        try:
            size: int = field.run_validation(raw)
            return size
        except ValidationError as error:
            raise ValidationError({self.page_size_query_param: error.detail}) from None

    def decode_cursor(self, request: Request) -> Any:
        try:
            cursor = super().decode_cursor(request)
            # The position is compared with start_ms: a crafted one that is not a
            # number would fail in the database.
            if cursor is not None and cursor.position is not None:
                if not math.isfinite(float(cursor.position)):
                    raise ValueError(cursor.position)
        except (NotFound, ValueError):
            raise ValidationError(
                {self.cursor_query_param: [self.invalid_cursor_message]}
            ) from None
        return cursor

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        paged = super().get_paginated_response_schema(schema)
        paged["required"] = ["next", "previous", "results"]
        return paged

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
                parameter["description"] = f"Traces per page, default {self.page_size}."
        return parameters


class TraceListApi(APIView):
    schema = ReadApiSchema()
    pagination_class = NewestFirst

    @extend_schema(
        description="Stitched traces, 50 a page by default, newest first by the trace's "
        "start (the browser span's skew-corrected send time, else its earliest span's "
        "start), every state and outcome unless filtered.",
        parameters=[TraceListInput, _WWW_AUTHENTICATE],
        responses=_answers(
            TraceSummaryOutput(many=True), not_found="`app` names no application of yours."
        ),
    )
    def get(self, request: Request) -> Response:
        query = TraceListInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        filters = dict(query.validated_data)
        slug = filters.pop("app", None)
        app = _named_application(request.user, slug) if slug else None
        traces = selectors.trace_list(user=request.user, app=app, **filters)
        paginator = self.pagination_class()
        page = selectors.with_turns(
            paginator.paginate_queryset(traces, request, view=self) or [], sessions=True
        )
        # many=True: a ListSerializer (see TraceOutput.get_spans).
        rows = TraceSummaryOutput(page, many=True).data  # type: ignore[arg-type]
        return paginator.get_paginated_response(rows)


# --- GET /api/v1/metrics -----------------------------------------------------------


class MetricsInput(TimeRangeInput):
    app = serializers.SlugField(
        required=False, help_text="Application slug; needed when you see more than one."
    )
    group_by = serializers.ChoiceField(choices=list(GROUP_COLUMNS), required=False)


class PercentilesOutput(serializers.Serializer[dict[str, Any]]):
    p50 = serializers.FloatField(allow_null=True)
    p75 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class RatesOutput(serializers.Serializer[dict[str, Any]]):
    stop_rate = serializers.FloatField(allow_null=True)
    regenerate_rate = serializers.FloatField(allow_null=True)
    abandonment_rate = serializers.FloatField(allow_null=True)
    abandonment_before_first_token_rate = serializers.FloatField(allow_null=True)
    error_rate = serializers.FloatField(allow_null=True)
    first_response_accuracy = serializers.FloatField(allow_null=True)
    hallucination_rate = serializers.FloatField(allow_null=True)


class MetricsFiguresOutput(serializers.Serializer[dict[str, Any]]):
    """``analytics.exact.summarize``'s figures (documentation only: the view builds the dict)."""

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
    cost_usd = serializers.FloatField(
        help_text="USD the turns cost, each at its model's price in force at its t_send "
        "(`rumapp price`); turns of a model with no price then add nothing."
    )
    cost_unpriced_turns = serializers.IntegerField(
        help_text="Turns whose model had no price at their time: left out of cost_usd."
    )
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
    percentiles = serializers.ChoiceField(
        choices=["exact", "sketch"],
        help_text="Nearest-rank over every turn, or from rollup sketches (large windows).",
    )
    percentiles_relative_error = serializers.FloatField(help_text="0 when exact.")


class MetricsApi(APIView):
    """Turn, session and conversation figures for one application and time range
    (default: the last 24 hours including the current minute). Percentiles are
    nearest-rank and exact; ``tbt_ms`` is over each turn's median gap."""

    schema = ReadApiSchema()

    @extend_schema(
        parameters=[MetricsInput, _WWW_AUTHENTICATE],
        responses=_answers(MetricsOutput, not_found="`app` names no application of yours."),
    )
    def get(self, request: Request) -> Response:
        query = MetricsInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        app = requested_application(request.user, params.get("app"))
        since, until = self._window(params.get("since"), params.get("until"))
        body = {"app": app.slug, "since": since.isoformat(), "until": until.isoformat()}
        body.update(
            figures.window_metrics(
                app=app, since=since, until=until, group_by=params.get("group_by")
            )
        )
        return Response(body)

    @staticmethod
    def _window(since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
        now = timezone.now()
        until = until or now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        since = since or until - timedelta(hours=24)
        if since >= until:
            raise ValidationError({"since": ["must be before until"]})
        return since, until
