"""Server-only traffic (traces with server spans and no browser root, such as API
clients): counted with their entry service's server TTFT and model, from rollups
and from the raw rows of periods not rebuilt yet, alike."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from correlator.analytics import figures, rollups
from correlator.models import DirtyRollup, Rollup
from correlator.stitch.load import StoredSpan
from correlator.stitch.rules import server_only_metrics
from correlator.stitch.sweep import sweep_run
from tests import factories
from tests.correlator.golden import send_otlp
from tests.otlp import builders

pytestmark = pytest.mark.django_db


def api_call(client: Client, token: str, *, model: str, ttft_s: float | None, at_ns: int) -> None:
    """An API client's chat call: the gateway's root server span (no browser span is
    its parent), with a model call under it."""
    trace = secrets.token_bytes(16)
    attributes = {"gen_ai.request.model": model} if model else {}
    if ttft_s is not None:
        attributes["gen_ai.server.time_to_first_token"] = ttft_s
    root = builders.span(trace_id=trace, span_id=secrets.token_bytes(8), start_ns=at_ns,
                         duration_ns=2_000_000_000, name="POST /v1/chat/completions",
                         attributes=attributes)  # fmt: skip
    send_otlp(client, token, builders.request([root], service="api-gateway").SerializeToString())


def test_server_only_traces_by_model_with_their_server_ttft(client):
    created = factories.make_app("API")
    app = created.application
    start_ns = time.time_ns() - 300 * 1_000_000_000
    calls = [("gpt-4o", 0.3), ("gpt-4o", 0.5), ("llama-3-70b", 0.9), ("", None)]
    for i, (model, ttft) in enumerate(calls):
        api_call(client, created.ingest_token, model=model, ttft_s=ttft,
                 at_ns=start_ns + i * 20 * 1_000_000_000)  # fmt: skip
    sweep_run(now=timezone.now(), finalize_all=True)
    now = timezone.now()
    since, until = now - timedelta(minutes=30), now

    def check() -> None:
        answer = figures.server_only(app=app, since=since, until=until)
        assert answer["traces"] == 4
        assert answer["server_ttft_ms"]["p50"] == pytest.approx(500, rel=0.01)
        assert answer["server_ttft_ms"]["p95"] == pytest.approx(900, rel=0.01)
        by_model = {g["key"]: g for g in answer["groups"]}
        assert {k: g["traces"] for k, g in by_model.items()} == {
            "": 1, "gpt-4o": 2, "llama-3-70b": 1,
        }  # fmt: skip
        assert by_model["gpt-4o"]["server_ttft_ms"]["p50"] == pytest.approx(300, rel=0.01)
        assert by_model[""]["server_ttft_ms"]["p50"] is None

    # Not rebuilt yet (marked dirty): from the raw traces and their spans.
    first = rollups.floor(since, "minute")
    rollups.rollups_mark({(app.pk, "minute", first + timedelta(minutes=m)) for m in range(31)},
                         now=now)  # fmt: skip
    DirtyRollup.objects.filter(app=app).update(last_marked_at=now)
    check()
    rollups.rollups_refresh(now=now)
    assert not DirtyRollup.objects.filter(app=app).exists()
    assert Rollup.objects.filter(app=app, dimension=rollups.SERVER_ONLY, period="day").count() == 3
    check()
    # The turns' figures know nothing of them: no turn was sent.
    assert figures.window_metrics(app=app, since=since, until=until)["turns"] == 0


def _span(span_id: str, parent: str, service: str, role: str, **more) -> StoredSpan:
    fields = dict(id=0, app_id=1, trace_id="t", span_id=span_id, parent_span_id=parent, kind=2,
                  role=role, service=service, start_ns=1_000, end_ns=9_000, received_us=0,
                  gen_ai_operation="", request_model="", response_model="", ttft_s=None,
                  ttft_source="", queue_s=None, input_tokens=None, output_tokens=None,
                  resource={})  # fmt: skip
    return StoredSpan(**{**fields, **more})


def test_the_entry_service_stands_for_the_gateway_and_keeps_its_role():
    entry = _span("a", "", "api", "service", ttft_s=0.25,
                  ttft_source="gen_ai.server.time_to_first_token")  # fmt: skip
    model = _span("b", "a", "vllm", "model", response_model="llama-3-70b", ttft_s=0.2,
                  ttft_source="gen_ai.latency.time_to_first_token")  # fmt: skip
    assert server_only_metrics([entry, model]) == (250.0, "llama-3-70b")
    assert entry.role == "service"  # the caller's spans are left as they were
    # A span with a parent outside the trace (a caller that was not traced) is an entry too.
    orphan = _span("c", "ffff", "api", "service", ttft_s=0.4,
                   ttft_source="gen_ai.server.time_to_first_token")  # fmt: skip
    assert server_only_metrics([orphan]) == (400.0, "")
    assert server_only_metrics([]) == (None, "")
