"""The demo endpoint on a live server exports real OTLP spans to that same server,
authenticated with the token handed over in the file, under the browser's trace."""

from __future__ import annotations

import functools
import io
import json
import time
import urllib.request

import pytest
from django.core.management import call_command

from correlator.models import Trace
from demo import views
from demo.gateway import gateway_chat
from demo.telemetry import flush_all, shutdown_all
from demo.token import demo_token_write
from rumserver.applications import application_create
from rumserver.models import Span

TRACE, PARENT = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.fixture
def live_demo(live_server, settings, tmp_path, monkeypatch):
    settings.LLMRUM_DEMO = True
    settings.LLMRUM_DEMO_ERROR_RATE = 0.0
    settings.LLMRUM_DEMO_TOKEN_FILE = str(tmp_path / "token")
    monkeypatch.delenv("LLMRUM_DEMO_INGEST_TOKEN", raising=False)
    monkeypatch.setattr(views, "gateway_chat", functools.partial(gateway_chat, sleep=lambda s: 0))
    created = application_create(name="Demo chat", slug="demo", origins=[live_server.url])
    demo_token_write(created.ingest_token)
    yield created.application
    shutdown_all()


def test_spans_reach_the_server_under_the_browser_trace(live_server, live_demo):
    body = {"model": "qwen2.5-32b-instruct", "messages": [{"role": "user", "content": "hi"}]}
    request = urllib.request.Request(
        f"{live_server.url}/demo/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "traceparent": f"00-{TRACE}-{PARENT}-01",
            "baggage": "session.id=s-42",
        },  # fmt: skip
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        timing = response.headers["Server-Timing"]
        stream = response.read().decode()
    assert stream.endswith("data: [DONE]\n\n")
    # Server-Timing names the gateway's server span in the browser's trace.
    assert f"trace;desc=00-{TRACE}-" in timing and "llmrum-now;desc=" in timing

    assert flush_all()
    deadline = time.monotonic() + 10
    while Span.objects.filter(trace_id=TRACE).count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    spans = {s.name: s for s in Span.objects.filter(app=live_demo, trace_id=TRACE)}
    assert set(spans) == {"POST /demo/v1/chat/completions", "chat qwen2.5-32b-instruct",
                          "llm_request"}  # fmt: skip
    server = spans["POST /demo/v1/chat/completions"]
    assert server.parent_span_id == PARENT
    assert server.attributes["session.id"] == "s-42"
    assert timing.split(f"00-{TRACE}-")[1][:16] == server.span_id
    model = spans["llm_request"]
    assert model.service == "demo-vllm" and model.request_model == "qwen2.5-32b-instruct"
    assert model.ttft_source == "gen_ai.latency.time_to_first_token" and model.queue_s is not None
    call_command("stitch", "--finalize-all", stdout=io.StringIO())
    stitched = Trace.objects.get(app=live_demo, trace_id=TRACE)
    assert (stitched.role_of(server), stitched.role_of(model)) == ("gateway", "model")
