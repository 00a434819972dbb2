"""Trace invariants (DESIGN.md §10.4): each rule caught alone on a trace built to break
exactly it, and ``manage.py check_traces`` counting stored traces, naming them and
answering with its exit status."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from correlator.models import Trace, Turn
from correlator.stitch.invariants import RULES, TraceView, broken_rules, traces_check
from rumserver.models import BrowserSession, Span
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp
from tests.integration.conftest import ROOT, subprocess_env

T0 = 1_750_000_000_000.0  # ms
BROWSER, GATEWAY, CLIENT, MODEL = "b" * 16, "a" * 16, "c" * 16, "d" * 16


def ns(ms: float) -> int:
    return round((T0 + ms) * 1_000_000)


def span(span_id: str, parent: str, role: str, kind: int, start: float, end: float,
         **extra: Any) -> Span:  # fmt: skip
    service = {"browser": "browser", "gateway": "gw", "model": "vllm"}[role]
    return Span(span_id=span_id, parent_span_id=parent, role=role, service=service,
                name=extra.pop("name", f"{role} {span_id[:2]}"), kind=kind, start_ns=ns(start),
                end_ns=ns(end), resource={"service.name": service}, **extra)  # fmt: skip


def good_trace(outcome: str = "completed") -> tuple[Trace, Turn, list[Span]]:
    """A chat turn as physics allows it: the browser span holds the gateway's server
    span, which holds its GenAI client span, which holds the model's; each first token
    is inside its span, and client > server > model TTFT."""
    trace = Trace(trace_id="1" * 32, start_ms=T0, end_ms=T0 + 2000,
                  clock_skew_uncertainty_ms=None)  # fmt: skip
    turn = Turn(span_id=BROWSER, t_send_ms=T0, outcome=outcome, client_ttft_ms=450.0,
                server_ttft_ms=400.0, model_ttft_ms=360.0, queue_ms=20.0,
                network_overhead_ms=50.0, tbt_p50_ms=30.0, tbt_p95_ms=60.0, tbt_max_ms=80.0,
                tpot_ms=31.0)  # fmt: skip
    spans = [
        span(BROWSER, "", "browser", 3, 0, 2000),
        span(GATEWAY, BROWSER, "gateway", 2, 20, 1980, ttft_s=0.4,
             ttft_source="gen_ai.response.time_to_first_chunk"),
        span(CLIENT, GATEWAY, "gateway", 3, 30, 1970, ttft_s=0.39,
             ttft_source="gen_ai.response.time_to_first_chunk"),
        span(MODEL, CLIENT, "model", 2, 40, 1960, ttft_s=0.36,
             ttft_source="gen_ai.latency.time_to_first_token", queue_s=0.02,
             events=[{"name": "first_token", "time_ns": ns(400), "attributes": {}}]),
    ]  # fmt: skip
    return trace, turn, spans


def view_of(trace: Trace, turn: Turn | None, spans: list[Span]) -> TraceView:
    return TraceView(trace, turn, spans)


def by_id(spans: list[Span]) -> dict[str, Span]:
    return {s.span_id: s for s in spans}


def test_a_physical_trace_breaks_no_rule():
    for outcome in ("completed", "error", "stopped", "abandoned"):
        assert broken_rules(view_of(*good_trace(outcome))) == []


def _model_after_client(t, u, s):
    by_id(s)[MODEL].end_ns = by_id(s)[CLIENT].end_ns + 2_000_000  # 2 ms past its parent


def _model_before_client(t, u, s):
    by_id(s)[MODEL].start_ns = by_id(s)[CLIENT].start_ns - 1_500_000


def _gateway_outlives_browser(t, u, s):
    by_id(s)[GATEWAY].end_ns = by_id(s)[BROWSER].end_ns + 5_000_000
    by_id(s)[CLIENT].end_ns = by_id(s)[MODEL].end_ns = by_id(s)[BROWSER].end_ns


def _gateway_starts_before_browser(t, u, s):
    by_id(s)[BROWSER].start_ns = by_id(s)[GATEWAY].start_ns + 2_000_000
    u.t_send_ms += 2


def _short_model_span(t, u, s):  # the demo's 21 ms model span with a 172 ms TTFT
    model = by_id(s)[MODEL]
    model.end_ns = model.start_ns + 21_000_000
    model.ttft_s, model.events = 0.172, []
    u.model_ttft_ms = 172.0


def _queue_over_model_span(t, u, s):
    model = by_id(s)[MODEL]
    model.queue_s = (model.end_ns - model.start_ns) / 1e9 + 0.01
    u.queue_ms = model.queue_s * 1000


def _event_after_end(t, u, s):
    model = by_id(s)[MODEL]
    model.events = [{"name": "gen_ai.first_token", "time_ns": model.end_ns + 3_000_000}]


def _gateway_ttft_after_end(t, u, s):
    gateway = by_id(s)[GATEWAY]
    gateway.ttft_s = (gateway.end_ns - gateway.start_ns) / 1e9 + 0.005


def _browser_first_token_after_end(t, u, s):
    u.client_ttft_ms = (by_id(s)[BROWSER].end_ns / 1e6 - u.t_send_ms) + 5
    u.network_overhead_ms = u.client_ttft_ms - u.server_ttft_ms


def _client_below_server(t, u, s):
    u.client_ttft_ms, u.network_overhead_ms = 390.0, -10.0


def _server_below_model(t, u, s):
    u.server_ttft_ms, u.network_overhead_ms = 350.0, 100.0


def _negative_tpot(t, u, s):
    u.tpot_ms = -0.5


def _span_ends_before_start(t, u, s):
    model = by_id(s)[MODEL]
    model.end_ns = model.start_ns - 1
    model.ttft_s = model.queue_s = None  # no TTFT or queue to outlast it
    model.events = []


def _negative_queue(t, u, s):
    by_id(s)[MODEL].queue_s = -0.001
    u.queue_ms = -1.0


def _first_token_before_start(t, u, s):
    model = by_id(s)[MODEL]
    model.events = [{"name": "first_token", "time_ns": model.start_ns - 2_000_000}]


BREAKS: list[tuple[str, Callable[[Trace, Turn, list[Span]], None]]] = [
    ("span_outside_parent", _model_after_client),
    ("span_outside_parent", _model_before_client),
    ("browser_not_containing_gateway", _gateway_outlives_browser),
    ("browser_not_containing_gateway", _gateway_starts_before_browser),
    ("model_ttft_over_span", _short_model_span),
    ("model_ttft_over_span", _queue_over_model_span),
    ("first_token_after_end", _event_after_end),
    ("first_token_after_end", _gateway_ttft_after_end),
    ("first_token_after_end", _browser_first_token_after_end),
    ("client_ttft_below_server", _client_below_server),
    ("server_ttft_below_model", _server_below_model),
    ("negative_duration", _negative_tpot),
    ("negative_duration", _span_ends_before_start),
    ("negative_duration", _negative_queue),
    ("negative_duration", _first_token_before_start),
]


@pytest.mark.parametrize(("rule", "breaker"), BREAKS, ids=[b.__name__[1:] for _, b in BREAKS])
def test_each_rule_alone_catches_the_trace_built_to_break_it(rule, breaker):
    trace, turn, spans = good_trace()
    breaker(trace, turn, spans)
    assert broken_rules(view_of(trace, turn, spans)) == [rule]


def test_every_rule_has_a_trace_that_breaks_it():
    assert {rule for rule, _ in BREAKS} == {r.name for r in RULES}


def test_a_millisecond_is_tolerated():
    trace, turn, spans = good_trace()
    by_id(spans)[MODEL].end_ns = by_id(spans)[CLIENT].end_ns + 900_000
    by_id(spans)[GATEWAY].end_ns = by_id(spans)[BROWSER].end_ns + 900_000
    by_id(spans)[CLIENT].end_ns = by_id(spans)[BROWSER].end_ns + 900_000
    assert broken_rules(view_of(trace, turn, spans)) == []


def test_ttft_comparisons_allow_the_skew_uncertainty_and_none_when_it_is_null():
    trace, turn, spans = good_trace()
    turn.client_ttft_ms, turn.network_overhead_ms = 395.0, -5.0  # 5 ms below the server
    turn.server_ttft_ms, turn.model_ttft_ms = 400.0, 403.0  # 3 ms below the model
    assert broken_rules(view_of(trace, turn, spans)) == [
        "client_ttft_below_server", "server_ttft_below_model",
    ]  # fmt: skip
    trace.clock_skew_uncertainty_ms = 6.0
    assert broken_rules(view_of(trace, turn, spans)) == []


def test_a_stopped_turns_gateway_may_outlive_the_browser_span():
    trace, turn, spans = good_trace("stopped")
    _gateway_outlives_browser(trace, turn, spans)
    assert broken_rules(view_of(trace, turn, spans)) == []


def test_the_stream_span_of_the_backend_helper_may_outlive_its_parent():
    """llmrum_django's ``llmrum.stream`` covers the streamed body, which Django's
    instrumentation sends after its server span ended (DESIGN.md §10.2)."""
    trace, turn, spans = good_trace()
    gateway = by_id(spans)[GATEWAY]
    spans.append(span("e" * 16, GATEWAY, "gateway", 1, 500, 1990, name="llmrum.stream"))
    gateway.end_ns = ns(480)
    by_id(spans)[CLIENT].end_ns = by_id(spans)[MODEL].end_ns = ns(470)
    gateway.ttft_s = None
    assert broken_rules(view_of(trace, turn, spans)) == []
    spans[-1].start_ns = gateway.start_ns - 5_000_000  # but never starts before it
    assert broken_rules(view_of(trace, turn, spans)) == ["span_outside_parent"]


def test_spans_of_a_browser_exporter_are_not_held_to_server_clocks():
    trace, turn, spans = good_trace()
    fetch = span("f" * 16, BROWSER, "gateway", 3, -90_000, -89_000)
    fetch.role, fetch.resource = "service", {"llmrum.source": "browser-otlp"}
    by_id(spans)[GATEWAY].parent_span_id = fetch.span_id
    assert broken_rules(view_of(trace, turn, spans + [fetch])) == []


def test_a_server_only_trace_is_checked_too():
    trace, _, spans = good_trace()
    server = [s for s in spans if s.role != "browser"]
    server[0].parent_span_id = ""
    assert broken_rules(view_of(trace, None, server)) == []
    _model_after_client(trace, None, server)
    assert broken_rules(view_of(trace, None, server)) == ["span_outside_parent"]


# --- stored traces and the command ---------------------------------------------------------


def store(app: Any, trace_id: str, start_offset_ms: float = 0.0,
          breaker: Callable[..., None] | None = None) -> Trace:  # fmt: skip
    """Write one stitched trace (roles on the trace, as the stitch keeps them)."""
    trace, turn, spans = good_trace()
    if breaker is not None:
        breaker(trace, turn, spans)
    shift_ns = round(start_offset_ms * 1_000_000)
    now = timezone.now()
    trace.app, trace.trace_id, trace.last_received_at, trace.stitched_at = app, trace_id, now, now
    trace.start_ms += start_offset_ms
    trace.end_ms += start_offset_ms
    trace.roles = {"gw": "gateway", "vllm": "model"}
    trace.save()
    session, _ = BrowserSession.objects.get_or_create(
        app=app, session_id="s-1", defaults={"first_seen_at": now, "last_seen_at": now}
    )
    turn.app, turn.trace, turn.session = app, trace, session
    turn.t_send_ms += start_offset_ms
    turn.save()
    for s in spans:
        s.app, s.trace_id, s.received_at = app, trace_id, now
        s.start_ns += shift_ns
        s.end_ns += shift_ns
        for event in s.events:
            event["time_ns"] += shift_ns
        # Ingest stores "service" for any OTLP span; the trace's roles decide.
        s.role = "browser" if s.role == "browser" else "service"
    Span.objects.bulk_create(spans)
    return trace


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("check_traces", *args, stdout=out, stderr=err)
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    return code, out.getvalue(), err.getvalue()


def counts(output: str) -> dict[str, int]:
    found = {}
    for line in output.splitlines():
        words = line.split()
        if words and words[0] in {r.name for r in RULES}:
            found[words[0]] = int(words[1])
    return found


@pytest.mark.django_db
def test_the_command_exits_0_when_every_rule_holds():
    app = factories.make_app().application
    for i in range(3):
        store(app, f"{i:032x}", i * 1000)
    code, out, err = run()
    assert code == 0 and err == ""
    assert "checked 3 traces" in out and "every rule holds" in out
    assert counts(out) == {r.name: 0 for r in RULES}


@pytest.mark.django_db
def test_the_command_counts_and_names_the_broken_traces_and_exits_1():
    app = factories.make_app().application
    store(app, "a" * 32)
    store(app, "b" * 32, 1000, _short_model_span)
    store(app, "c" * 32, 2000, _short_model_span)
    store(app, "d" * 32, 3000, _client_below_server)
    code, out, err = run()
    assert code == 1
    assert counts(out) == {**{r.name: 0 for r in RULES}, "model_ttft_over_span": 2,
                           "client_ttft_below_server": 1}  # fmt: skip
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["model_ttft_over_span"].endswith(f"e.g. {'b' * 32} {'c' * 32}")
    assert lines["client_ttft_below_server"].endswith(f"e.g. {'d' * 32}")
    assert "a" * 32 not in out
    assert "2 of 7 rules broken" in err


@pytest.mark.django_db
def test_roles_come_from_the_trace():
    """Stored spans say ``service``; the rules judge the model span by the trace's roles."""
    app = factories.make_app().application
    store(app, "b" * 32, 0, _short_model_span)
    assert counts(run()[1])["model_ttft_over_span"] == 1
    Trace.objects.filter(trace_id="b" * 32).update(roles={"gw": "gateway", "vllm": "service"})
    assert counts(run()[1])["model_ttft_over_span"] == 0


@pytest.mark.django_db
def test_app_and_since_choose_the_traces():
    chat, other = factories.make_app().application, factories.make_app().application
    store(chat, "1" * 32, 0, _negative_tpot)
    store(chat, "2" * 32, 60_000)
    store(other, "3" * 32, 0, _negative_tpot)
    code, out, _ = run("--app", chat.slug)
    assert code == 1 and "checked 2 traces" in out and "3" * 32 not in out
    since = datetime.fromtimestamp((T0 + 30_000) / 1000, tz=UTC).isoformat()
    code, out, _ = run("--app", chat.slug, "--since", since)
    assert code == 0 and "checked 1 traces" in out
    # No offset: UTC (every application: the other's trace started before). A date alone:
    # its midnight.
    assert run("--since", since.removesuffix("+00:00")) == (0, out, "")
    code, out, _ = run("--since", "2100-01-01")
    assert code == 0 and "checked 0 traces" in out


@pytest.mark.django_db
def test_batches_page_through_every_trace_even_with_equal_starts():
    app = factories.make_app().application
    for i in range(7):
        store(app, f"{i:032x}", 1000 * (i // 3), _negative_tpot if i % 2 else None)
    report = traces_check(app_ids=[app.pk], batch_size=2, examples=10)
    assert report.checked == 7 and report.counts["negative_duration"] == 3
    assert sorted(report.examples["negative_duration"]) == [f"{i:032x}" for i in (1, 3, 5)]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--app", "nope"], "no application with slug 'nope'"),
        (["--since", "yesterday"], "--since: 'yesterday' is not an ISO 8601 date"),
        (["--since", "2024-13-45"], "--since: '2024-13-45' is not an ISO 8601 date"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_bad_arguments_are_refused_with_a_message(args, message):
    factories.make_app()
    with pytest.raises(CommandError, match=message):
        call_command("check_traces", *args, stdout=io.StringIO())


@pytest.mark.django_db
def test_the_stitched_golden_traces_break_no_rule(client):
    """Real ingest and a real stitch of golden turns (tests/correlator/golden.py), one
    with a browser clock five minutes slow."""
    created = factories.make_app()
    for golden in (
        GoldenTurn(t0=T0, browser_offset_ms=-300_000, server_timing=True, session="s-slow"),
        GoldenTurn(t0=T0 + 5000, browser_offset_ms=4000, outcome="stopped", session="s-fast"),
    ):
        send_beacon(client, created.application.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
        send_otlp(client, created.ingest_token, golden.model_request())
    call_command("stitch", finalize_all=True, stdout=io.StringIO())
    code, out, _ = run()
    assert code == 0 and counts(out) == {r.name: 0 for r in RULES}
    assert "checked 2 traces" in out


@pytest.mark.django_db(transaction=True)
def test_the_process_exit_status_says_whether_a_rule_is_broken():
    app = factories.make_app().application
    store(app, "a" * 32)
    command = [sys.executable, "manage.py", "check_traces", "--app", app.slug]
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "every rule holds" in done.stdout
    store(app, "b" * 32, 1000, _gateway_outlives_browser)
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert counts(done.stdout)["browser_not_containing_gateway"] == 1
    assert "1 of 7 rules broken" in done.stderr
