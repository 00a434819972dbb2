"""``GET /api/v1/model-servers?app=&since=&until=``: each model server's state over time
(``analytics.model_servers``) on the same steps as the client and model TTFT p95, with
the read API's auth, application scoping and refusals."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from correlator.analytics.model_servers import model_server_series
from correlator.api import (
    _WWW_AUTHENTICATE,
    MetricsApi,
    ReadApiSchema,
    TimeRangeInput,
    _answers,
    requested_application,
)
from correlator.reports.forms import MAX_RANGE, step_for


class ModelServersInput(TimeRangeInput):
    app = serializers.SlugField(
        required=False, help_text="Application slug; needed when you see more than one."
    )


def _values(help_text: str) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.FloatField(allow_null=True), help_text=f"One per step: {help_text}"
    )


class StepOutput(serializers.Serializer[dict[str, Any]]):
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    client_ttft_p95_ms = serializers.FloatField(allow_null=True)
    model_ttft_p95_ms = serializers.FloatField(allow_null=True)


# A plain dict of fields: "instance" is a Serializer attribute, not a field name.
ServerOutput = inline_serializer(
    name="ModelServerOutput",
    fields={
        "service": serializers.CharField(help_text="Resource service.name."),
        "instance": serializers.CharField(help_text="Resource service.instance.id."),
        "requests_running": _values("vllm:num_requests_running, mean, summed over engines."),
        "requests_waiting": _values("vllm:num_requests_waiting, mean, summed over engines."),
        "kv_cache_usage": _values("vllm:kv_cache_usage_perc (or gpu_cache_usage_perc), 0-1, mean."),
        "preemptions_per_second": _values("rate of vllm:num_preemptions_total."),
        "prompt_tokens_per_second": _values("rate of vllm:prompt_tokens_total."),
        "generation_tokens_per_second": _values("rate of vllm:generation_tokens_total."),
        "gpu_utilization_percent": _values("DCGM_FI_DEV_GPU_UTIL, 0-100, mean over GPUs."),
    },
    many=True,
)


class ModelServersOutput(serializers.Serializer[dict[str, Any]]):
    app = serializers.CharField()
    since = serializers.DateTimeField()
    until = serializers.DateTimeField()
    step_seconds = serializers.FloatField()
    steps = StepOutput(many=True)
    servers = ServerOutput


class ModelServersApi(APIView):
    """Each model server (service.name + service.instance.id) over time: requests
    running and waiting, KV-cache use, preemptions, prompt and generation tokens per
    second (counter resets handled), GPU use, on the same steps as the client and
    model TTFT p95. Default range: the last 24 hours including the current minute."""

    schema = ReadApiSchema()

    @extend_schema(
        parameters=[ModelServersInput, _WWW_AUTHENTICATE],
        responses=_answers(ModelServersOutput, not_found="`app` names no application of yours."),
    )
    def get(self, request: Request) -> Response:
        query = ModelServersInput(data=request.query_params)
        query.is_valid(raise_exception=True)
        params = query.validated_data
        app = requested_application(request.user, params.get("app"))
        since, until = MetricsApi._window(params.get("since"), params.get("until"))
        if until - since > MAX_RANGE:
            raise ValidationError({"since": [f"the range may be at most {MAX_RANGE.days} days"]})
        step = step_for(until - since)
        answer = model_server_series(app=app, since=since, until=until, step=step)
        body = {
            "app": app.slug,
            "since": since.isoformat(),
            "until": until.isoformat(),
            "step_seconds": step.total_seconds(),
            "steps": [
                {**s, "since": s["since"].isoformat(), "until": s["until"].isoformat()}
                for s in answer["steps"]
            ],
            "servers": answer["servers"],
        }
        return Response(body)
