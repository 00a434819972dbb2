"""The demo chat page and its simulated OpenAI-compatible endpoint.

Both answer 404 unless ``LLMRUM_DEMO`` is on (README: "Demo")."""

from __future__ import annotations

import json
import logging
import random
import time
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.http.request import split_domain_port
from django.shortcuts import render
from django.urls import Resolver404, resolve
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET
from opentelemetry import baggage

from demo.gateway import gateway_chat
from demo.simulator import DEFAULT_MODEL, MODELS, MODELS_BY_NAME, plan_answer
from demo.telemetry import DemoTracers, demo_tracers
from demo.token import DEMO_SLUG, demo_token_read
from llmrum_django.propagation import SESSION_BAGGAGE_KEY, extract_request_context
from llmrum_django.servertiming import add_server_timing, server_timing_value
from rumserver.models import Application

logger = logging.getLogger(__name__)
_rng = random.SystemRandom()
_warned = False


def _enabled() -> None:
    if not getattr(settings, "LLMRUM_DEMO", False):
        raise Http404("the demo is off (LLMRUM_DEMO=0)")


def _reports_trace_prefix() -> str:
    """Where a trace's waterfall lives, when the report pages are installed."""
    try:
        resolve("/reports/traces/00000000000000000000000000000001")
    except Resolver404:
        return ""
    return "/reports/traces/"


@require_GET
def chat_page(request: HttpRequest) -> HttpResponse:
    _enabled()
    app = Application.objects.filter(slug=DEMO_SLUG).first()
    context = {
        "app": app,
        "models": [m.name for m in MODELS],
        "default_model": DEFAULT_MODEL,
        "reports_trace_prefix": _reports_trace_prefix(),
        "exporting": bool(demo_token_read()),
    }
    return render(request, "demo/chat.html", context)


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _otlp_endpoint(request: HttpRequest) -> str:
    """Where the spans go: the setting, else this server as the request reached it,
    but only on a loopback address: the export carries the ingest token, and a Host
    header (even an allowed one) must never send it elsewhere."""
    configured = getattr(settings, "LLMRUM_DEMO_OTLP_ENDPOINT", "")
    if configured:
        return configured
    host, _ = split_domain_port(request.get_host())
    if host in LOOPBACK_HOSTS:
        return request.build_absolute_uri("/v1/traces")
    return ""


def _warn_once(message: str) -> None:
    global _warned
    if not _warned:
        logger.warning("llmrum demo: %s; the demo answers but exports no spans", message)
        _warned = True


def _tracers(request: HttpRequest) -> DemoTracers | None:
    token = demo_token_read()
    if not token:
        _warn_once("no ingest token (run `manage.py serve`, or set LLMRUM_DEMO_INGEST_TOKEN)")
        return None
    endpoint = _otlp_endpoint(request)
    if not endpoint:
        _warn_once("set LLMRUM_DEMO_OTLP_ENDPOINT (this server's /v1/traces)")
        return None
    return demo_tracers(endpoint=endpoint, token=token)


def _input_tokens(messages: Any) -> int:
    chars = 0
    if isinstance(messages, list):
        for message in messages[-50:]:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                chars += len(message["content"])
    return 350 + chars // 4  # a system prompt, then about four characters a token


@csrf_exempt  # JSON only: a cross-site form cannot send it, and nothing is stored here
def chat_completions(request: HttpRequest) -> HttpResponse:
    _enabled()
    started = time.perf_counter()
    if request.method != "POST":
        response = JsonResponse({"error": {"message": "use POST"}}, status=405)
        response["Allow"] = "POST"
        return response
    if request.content_type != "application/json":
        return JsonResponse({"error": {"message": "send application/json"}}, status=415)
    try:
        payload = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"error": {"message": "the body is not JSON"}}, status=400)
    if not isinstance(payload, dict):
        return JsonResponse({"error": {"message": "the body must be an object"}}, status=400)
    model = MODELS_BY_NAME.get(str(payload.get("model") or ""), MODELS_BY_NAME[DEFAULT_MODEL])
    plan = plan_answer(
        _rng,
        model,
        input_tokens=_input_tokens(payload.get("messages")),
        output_tokens=_rng.randint(40, 260),
        error_rate=float(getattr(settings, "LLMRUM_DEMO_ERROR_RATE", 1 / 15)),
    )
    parent = extract_request_context(request)
    session = baggage.get_baggage(SESSION_BAGGAGE_KEY, parent)
    answer = gateway_chat(
        tracers=_tracers(request),
        parent=parent,
        plan=plan,
        session_id=session if isinstance(session, str) and len(session) <= 256 else "",
    )
    if isinstance(answer.body, bytes):
        response: HttpResponse = HttpResponse(
            answer.body, status=answer.status, content_type=answer.content_type
        )
        if answer.status == 429:
            response["Retry-After"] = "1"
    else:
        response = StreamingHttpResponse(
            answer.body, status=answer.status, content_type=answer.content_type
        )
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"  # proxies: do not buffer the stream
    add_server_timing(
        response,
        server_timing_value(
            span_context=answer.span_context,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            now_ms=time.time() * 1000.0,
        ),
    )
    return response
