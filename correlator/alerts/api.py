"""``GET|POST /api/v1/alert-rules`` (DESIGN.md §10.6): the rules of the applications
the caller sees, and a new rule for one of them. Same authentication and scoping as
the read API (``correlator.api``)."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from correlator import selectors
from correlator.alerts.figures import figure_paths
from correlator.alerts.models import AlertRule
from correlator.alerts.webhook_guard import literal_address_refused
from correlator.api import (
    _WWW_AUTHENTICATE,
    NO_SUCH_APP,
    ErrorOutput,
    FiniteFloatField,
    ReadApiSchema,
    _answers,
    _named_application,
)


class AlertRuleOutput(serializers.Serializer[AlertRule]):
    id = serializers.IntegerField()
    app = serializers.CharField(source="application.slug")
    name = serializers.CharField()
    figure = serializers.CharField(help_text="A figure of GET /api/v1/metrics.")
    operator = serializers.ChoiceField(choices=AlertRule.Operator.values)
    threshold = serializers.FloatField()
    window_minutes = serializers.IntegerField()
    min_turns = serializers.IntegerField()
    webhook_url = serializers.CharField()
    email_recipients = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    state = serializers.ChoiceField(
        choices=AlertRule.State.values, help_text="firing since its last firing event."
    )
    created = serializers.DateTimeField(source="created_at")


class AlertRuleInput(serializers.Serializer[dict[str, Any]]):
    app = serializers.SlugField(help_text="Application slug.")
    name = serializers.CharField(max_length=200)
    figure = serializers.ChoiceField(
        choices=list(figure_paths()),
        help_text="A figure of the GET /api/v1/metrics answer, e.g. client_ttft_ms.p95.",
    )
    operator = serializers.ChoiceField(choices=AlertRule.Operator.values)
    threshold = FiniteFloatField()
    window_minutes = serializers.IntegerField(min_value=1, max_value=1440, default=5)
    min_turns = serializers.IntegerField(min_value=0, max_value=1_000_000, default=20)
    webhook_url = serializers.URLField(
        max_length=2000, required=False, allow_blank=True, default="",
        help_text="Sent a JSON POST with a Slack-style text.",
    )  # fmt: skip
    email_recipients = serializers.ListField(
        child=serializers.EmailField(), max_length=20, required=False, default=list
    )
    enabled = serializers.BooleanField(default=True)

    def validate_webhook_url(self, value: str) -> str:
        refused = literal_address_refused(value) if value else None
        if refused:
            raise serializers.ValidationError(refused)
        return value


class BodyErrorsOutput(serializers.Serializer[dict[str, Any]]):
    """A 400 for a body: each field at fault with what is wrong with it (or
    ``detail`` for a body that is no JSON object). Schema: ``BodyErrorsSchema``."""


class BodyErrorsSchema(OpenApiSerializerExtension):
    target_class = BodyErrorsOutput

    def map_serializer(self, auto_schema: Any, direction: Any) -> dict[str, Any]:
        return {
            "type": "object",
            "description": "Field name -> what is wrong with its value (a list item's "
            "errors keyed by its index); `detail` when the body is not JSON.",
            "additionalProperties": {},
            "minProperties": 1,
        }


def _rules(request: Request) -> QuerySet[AlertRule]:
    apps = selectors.visible_applications(request.user)
    return AlertRule.objects.filter(application__in=apps).select_related("application")


class AlertRulesApi(APIView):
    schema = ReadApiSchema()
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="alert_rules_list",
        parameters=[
            OpenApiParameter("app", OpenApiTypes.STR, description="Application slug."),
            _WWW_AUTHENTICATE,
        ],
        responses=_answers(
            AlertRuleOutput(many=True), not_found="`app` names no application of yours."
        ),
    )
    def get(self, request: Request) -> Response:
        rules = _rules(request).order_by("pk")
        slug = request.query_params.get("app")
        if slug:
            rules = rules.filter(application=_named_application(request.user, slug))
        # many=True: a ListSerializer (see correlator.api TraceOutput.get_spans).
        return Response(AlertRuleOutput(rules, many=True).data)  # type: ignore[arg-type]

    @extend_schema(
        operation_id="alert_rules_create",
        request=AlertRuleInput,
        parameters=[_WWW_AUTHENTICATE],
        responses={
            (201, "application/json"): AlertRuleOutput,
            (400, "application/json"): OpenApiResponse(
                BodyErrorsOutput, description="A field's value is invalid; the field is named."
            ),
            (401, "application/json"): OpenApiResponse(
                ErrorOutput, description="No valid token or session."
            ),
            (403, "application/json"): OpenApiResponse(
                ErrorOutput, description="A session without its CSRF token."
            ),
            (406, "application/json"): OpenApiResponse(
                ErrorOutput, description="The Accept header asks for no JSON."
            ),
            (415, "application/json"): OpenApiResponse(
                ErrorOutput, description="The body is not application/json."
            ),
        },
    )
    def post(self, request: Request) -> Response:
        body = AlertRuleInput(data=request.data)
        body.is_valid(raise_exception=True)
        fields = dict(body.validated_data)
        app = selectors.visible_applications(request.user).filter(slug=fields.pop("app")).first()
        if app is None:
            raise serializers.ValidationError({"app": [NO_SUCH_APP]})
        rule = AlertRule.objects.create(application=app, **fields)
        return Response(AlertRuleOutput(rule).data, status=201)
