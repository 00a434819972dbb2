"""Browser OpenTelemetry exporters post to /v1/traces with the public key (DESIGN.md
§10.1): from an allowed Origin, preflight included, under the beacon's limits, and
their spans never take a server role."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.test import override_settings

from correlator.models import Trace
from rumserver.models import Span
from tests import factories
from tests.otlp import builders
from tests.otlp.test_receiver import JSON, PB, assert_nothing_stored, status_of


@pytest.fixture
def app(db):
    return factories.make_app()


def post_from_page(client, app, body: bytes, *, origin=factories.CHAT_ORIGIN, key=None, **extra):
    key = app.application.public_key if key is None else key
    headers = {"HTTP_ORIGIN": origin} if origin else {}
    return client.generic(
        "POST", f"/v1/traces?key={key}", body, content_type=JSON, **headers, **extra
    )


def test_a_preflight_from_an_allowed_origin_is_answered(client, app):
    r = client.options(
        f"/v1/traces?key={app.application.public_key}",
        HTTP_ORIGIN=factories.CHAT_ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == factories.CHAT_ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"]


def test_a_preflight_for_the_key_header_is_answered_for_any_origin(client, app):
    # A preflight carries header names, not values: the POST is what gets checked.
    r = client.options(
        "/v1/traces",
        HTTP_ORIGIN="https://elsewhere.example.net",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type,x-llmrum-key",
    )
    assert r.status_code == 200
    assert "x-llmrum-key" in r.headers["access-control-allow-headers"]


def test_a_preflight_with_the_key_of_another_origin_gets_no_cors_headers(client, app):
    r = client.options(
        f"/v1/traces?key={app.application.public_key}",
        HTTP_ORIGIN="https://evil.example.net",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert "access-control-allow-origin" not in r.headers


def test_spans_from_a_page_are_stored_as_browser_otlp_with_cors_headers(client, app):
    trace, span = factories.trace_id(), factories.span_id()
    r = post_from_page(client, app, builders.otlp_json(trace, span))
    assert r.status_code == 200, r.content
    assert json.loads(r.content) == {}
    assert r.headers["access-control-allow-origin"] == factories.CHAT_ORIGIN
    stored = Span.objects.get(trace_id=trace, span_id=span)
    assert stored.attributes["llmrum.source"] == "browser-otlp"
    assert stored.role == "service"


def test_the_key_may_come_in_the_x_llmrum_key_header(client, app):
    trace, span = factories.trace_id(), factories.span_id()
    r = client.generic(
        "POST",
        "/v1/traces",
        builders.otlp_json(trace, span),
        content_type=JSON,
        HTTP_ORIGIN=factories.CHAT_ORIGIN,
        HTTP_X_LLMRUM_KEY=app.application.public_key,
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == factories.CHAT_ORIGIN
    assert Span.objects.get(span_id=span).attributes["llmrum.source"] == "browser-otlp"


@pytest.mark.parametrize(
    ("origin", "key", "message"),
    [
        ("https://evil.example.net", None, "origin 'https://evil.example.net' is not allowed"),
        (factories.CHAT_ORIGIN, "pk_unknown", "unknown public key"),
    ],
)
def test_a_foreign_origin_or_an_unknown_key_is_403_and_stores_nothing(
    client, app, origin, key, message
):
    body = builders.otlp_json(factories.trace_id(), factories.span_id())
    r = post_from_page(client, app, body, origin=origin, key=key)
    assert r.status_code == 403
    assert r["Content-Type"] == JSON
    assert message in status_of(r).message
    assert "access-control-allow-origin" not in r.headers
    assert_nothing_stored()


def test_a_page_cannot_use_the_ingest_token_scheme_by_mistake(client, app):
    # Protobuf works as well as JSON; a public key is never an ingest token.
    body = builders.request([builders.span()]).SerializeToString()
    r = client.generic(
        "POST", "/v1/traces", body, content_type=PB,
        HTTP_AUTHORIZATION=f"Bearer {app.application.public_key}",
    )  # fmt: skip
    assert r.status_code == 401 and "unknown ingest token" in status_of(r).message
    assert_nothing_stored()


@override_settings(LLMRUM_BEACON_IP_RATE_LIMIT=1.0)
def test_a_page_is_held_to_the_beacon_rate_limits(client, app):
    statuses = [
        post_from_page(
            client, app, builders.otlp_json(factories.trace_id(), factories.span_id())
        ).status_code
        for _ in range(3)
    ]
    assert statuses == [200, 200, 429]
    assert Span.objects.count() == 2


def test_a_page_cannot_claim_a_server_role(client, app):
    """Neither a resource's llmrum.role nor a SERVER span under the browser turn
    makes a page's span a gateway, and a page that names itself like the real
    gateway does not change the real gateway's role."""
    turn = factories.turn_event()
    trace, browser_span = turn["trace_id"], turn["span_id"]
    r = client.post(
        f"/rum/v1/beacon?key={app.application.public_key}",
        factories.encode(factories.batch([turn])),
        content_type="text/plain",
        HTTP_ORIGIN=factories.CHAT_ORIGIN,
    )
    assert r.status_code == 202
    forged = builders.request(
        [builders.span(trace_id=bytes.fromhex(trace), parent=bytes.fromhex(browser_span),
                       attributes={"gen_ai.request.model": "gpt-4o"})],
        service="chat-gateway", resource={"llmrum.role": "gateway"},
    )  # fmt: skip
    r = client.generic(
        "POST", f"/v1/traces?key={app.application.public_key}", forged.SerializeToString(),
        content_type=PB, HTTP_ORIGIN=factories.CHAT_ORIGIN,
    )  # fmt: skip
    assert r.status_code == 200
    real = builders.request(
        [builders.span(trace_id=bytes.fromhex(trace), parent=bytes.fromhex(browser_span))],
        service="chat-gateway",
    )
    r = client.generic(
        "POST", "/v1/traces", real.SerializeToString(), content_type=PB,
        HTTP_AUTHORIZATION=f"Bearer {app.ingest_token}",
    )  # fmt: skip
    assert r.status_code == 200
    call_command("stitch", "--finalize-all", stdout=io.StringIO())
    stitched = Trace.objects.get(trace_id=trace)
    roles = {
        s.attributes.get("llmrum.source", "server"): stitched.role_of(s)
        for s in Span.objects.filter(trace_id=trace).exclude(role="browser")
    }
    assert roles == {"browser-otlp": "service", "server": "gateway"}
