"""The demo's traces keep cause and effect (DESIGN.md §10.4): ``demo_traffic`` and the
live demo gateway produce no trace that ``check_traces`` counts."""

from __future__ import annotations

import io
import random
import time
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from correlator.models import Turn
from correlator.stitch.invariants import RULES
from demo import simulator
from demo.gateway import gateway_chat
from tests import factories
from tests.correlator.golden import send_beacon, send_otlp
from tests.correlator.test_invariants import counts
from tests.demo.test_simulator import tracers  # noqa: F401  (the in-memory exporter fixture)

TURNS = 300


def check_traces(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("check_traces", *args, stdout=out, stderr=io.StringIO())
    except SystemExit as exit_:
        return int(exit_.code or 0), out.getvalue()
    return 0, out.getvalue()


@pytest.mark.django_db
def test_demo_traffic_breaks_no_invariant():
    app = factories.make_app().application
    call_command("demo_traffic", turns=TURNS, app=app.slug, days=2, seed=20240611,
                 no_progress=True, stdout=io.StringIO())  # fmt: skip
    call_command("stitch", finalize_all=True, stdout=io.StringIO())
    code, out = check_traces("--app", app.slug)
    assert counts(out) == {rule.name: 0 for rule in RULES}, out
    assert code == 0
    # Every kind of turn was there to be checked, skewed browser clocks included.
    turns = Turn.objects.filter(app=app)
    assert set(turns.values_list("outcome", flat=True)) == {"completed", "stopped", "error",
                                                           "abandoned"}  # fmt: skip
    assert turns.exclude(trace__clock_skew_ms__range=(-1000, 1000)).exists()
    checked = int(out.split()[1])
    assert checked > turns.count()  # the server-only traces too


def _browser_parent(trace_id: str, span_id: str) -> Any:
    context = SpanContext(trace_id=int(trace_id, 16), span_id=int(span_id, 16),
                          is_remote=True, trace_flags=TraceFlags(1))  # fmt: skip
    return trace.set_span_in_context(NonRecordingSpan(context))


def _chat(demo_tracers: Any, *, outcome: str, error_status: int | None = None) -> dict[str, Any]:
    """One request to the live demo gateway (its delays slept, shortened), read as the
    browser SDK would: the turn event it beacons, on this process's clock."""
    plan = simulator.plan_answer(random.Random(5), "llama-3.1-8b-instruct", output_tokens=8,
                                 error_rate=0.0)  # fmt: skip
    plan.error_status = error_status
    event = factories.turn_event(outcome=outcome, status=error_status or 200)
    for key in ("t_headers", "t_first_token", "t_last_token", "tbt_gaps", "tbt_summary", "model",
                "usage", "server_timing", "output_tokens"):  # fmt: skip
        event.pop(key)
    event["t_send"] = time.time() * 1000
    answer = gateway_chat(tracers=demo_tracers, parent=_browser_parent(event["trace_id"],
                          event["span_id"]), plan=plan, sleep=lambda s: time.sleep(s / 20))  # fmt: skip
    event["t_headers"] = time.time() * 1000
    tokens: list[float] = []
    if not isinstance(answer.body, bytes):
        for chunk in answer.body:
            if b'"content"' in chunk:
                tokens.append(time.time() * 1000)
            if outcome == "stopped" and len(tokens) == 3:
                answer.body.close()  # type: ignore[attr-defined]  # Stop
                break
    event["t_end"] = time.time() * 1000
    if tokens:
        event.update(t_first_token=tokens[0], t_last_token=tokens[-1], output_tokens=len(tokens))
    event["ts"] = event["t_end"]
    return event


@pytest.mark.django_db
def test_the_live_demo_gateway_breaks_no_invariant(client: Client, tracers):  # noqa: F811
    demo, exporter = tracers
    created = factories.make_app()
    events = [
        _chat(demo, outcome="completed"),
        _chat(demo, outcome="stopped"),
        _chat(demo, outcome="error", error_status=500),
        _chat(demo, outcome="error", error_status=429),
    ]
    send_otlp(client, created.ingest_token, encode_spans(exporter.get_finished_spans())
              .SerializeToString())  # fmt: skip
    send_beacon(client, created.application.public_key, factories.batch(events))
    call_command("stitch", finalize_all=True, stdout=io.StringIO())
    code, out = check_traces("--app", created.application.slug)
    assert counts(out) == {rule.name: 0 for rule in RULES}, out
    assert code == 0 and "checked 4 traces" in out
    turns = Turn.objects.filter(app=created.application)
    assert turns.filter(model_ttft_ms__isnull=False, server_ttft_ms__isnull=False).count() == 2
