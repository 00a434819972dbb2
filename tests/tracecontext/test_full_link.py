"""The backend half of the product, for real: llmrum serving, a Django gateway under
gunicorn set up as the README says (llmrum_django's middleware, OpenTelemetry's Django
instrumentation, the SDK exporting OTLP/HTTP to llmrum by the standard variables), and
a chat request carrying the browser's ``traceparent`` and ``baggage``. The gateway's
spans must land in llmrum under the browser's trace, with the span ``Server-Timing``
named, the session id, and the gateway role.

The browser side (CORS, reading ``Server-Timing`` in Chromium) is test_browser.py's.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command

from correlator.models import Trace
from rumserver.models import BrowserEvent
from tests import factories
from tests.integration.conftest import post_beacon
from tests.tracecontext.conftest import run_gateway
from tests.tracecontext.linking import (
    SESSION_ID,
    chat,
    exporting_to,
    trace_entry,
    wait_for_spans,
)

STREAMED = ["Hi", " there", "!", "[DONE]"]


@pytest.mark.django_db(transaction=True)
def test_the_gateways_spans_land_in_llmrum_under_the_browsers_trace(
    live_server, tmp_path: Path
) -> None:
    app = factories.make_app()
    trace_id, browser_span_id = factories.trace_id(), factories.span_id()
    # The turn's beacon first, as when the exporter batches for longer than the answer
    # streams.
    turn = factories.turn_event(trace_id=trace_id, span_id=browser_span_id)
    batch = factories.batch([turn], session={"id": SESSION_ID, "started_at": factories.now_ms()})
    status, _, answer = post_beacon(live_server.url, app.application.public_key, batch)
    assert status == 202, answer
    assert BrowserEvent.objects.filter(trace_id=trace_id, span_id=browser_span_id).exists()

    log = tmp_path / "gateway.log"
    with run_gateway(
        "tests.tracecontext.otel_gateway:application",
        log,
        **exporting_to(live_server.url, app.ingest_token, "chat-gateway"),
        OTEL_PYTHON_DJANGO_EXCLUDED_URLS="elsewhere",  # the start-up probe's path
    ) as gateway:
        status, server_timing, data = chat(
            gateway, "/api/chat-stream", f"00-{trace_id}-{browser_span_id}-01"
        )
    # Leaving stopped gunicorn gracefully: the worker's batch processor flushed at exit.
    assert status == 200
    assert [json.loads(d)["delta"] for d in data[:-1]] + data[-1:] == STREAMED

    version, named_trace, server_span_id, flags = trace_entry(server_timing).split("-")
    assert (version, named_trace, flags) == ("00", trace_id, "01")
    assert server_span_id != browser_span_id  # the gateway's own span, not an echo

    spans = wait_for_spans(trace_id, 4, log)
    by_name = {span.name: span for span in spans}
    assert len(spans) == 4, [span.name for span in spans]
    server = by_name["POST api/chat-stream"]
    assert server.span_id == server_span_id
    assert (server.trace_id, server.parent_span_id, server.kind) == (
        trace_id,
        browser_span_id,
        2,
    )
    assert server.service == "chat-gateway"
    assert server.scope["name"] == "opentelemetry.instrumentation.django"
    assert server.attributes["session.id"] == SESSION_ID  # copied from baggage by the helper

    # The model call made lazily inside the streamed body stays in the trace, under the
    # server span, and what the gateway did after the chunks stays under the model call.
    model = by_name["chat gpt-4o-mini"]
    assert (model.kind, model.parent_span_id) == (3, server.span_id)
    assert (model.gen_ai_operation, model.request_model) == ("chat", "gpt-4o-mini")
    assert by_name["moderate answer"].parent_span_id == model.span_id
    # The stitch names the gateway: its SERVER span is the browser span's child.
    call_command("stitch", "--finalize-all", stdout=io.StringIO())
    stitched = Trace.objects.get(trace_id=trace_id)
    assert {stitched.role_of(span) for span in spans} == {"gateway"}
    # The instrumentation ends the server span when the response headers leave, before
    # the body streams: the model span outlives its parent, and the helper's first-token
    # mark rides on a span of its own covering the body, exported by the gateway's SDK.
    assert server.end_ns <= model.end_ns
    stream = by_name["llmrum.stream"]
    assert (stream.kind, stream.parent_span_id) == (1, server.span_id)
    assert stream.scope["name"] == "llmrum_backend"
    (event,) = stream.events
    assert event["name"] == "first_token"
    assert server.end_ns <= stream.start_ns <= event["time_ns"] <= stream.end_ns
    assert stream.ttft_source == "event:first_token"
