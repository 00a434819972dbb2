"""The demo page and its chat endpoint through Django, and the token handoff."""

from __future__ import annotations

import functools
import os
import re
import stat

import pytest
from django.test import Client

from demo import views
from demo.gateway import gateway_chat
from demo.token import demo_token_ensure, demo_token_read, demo_token_write
from rumserver.applications import application_create, token_hash
from rumserver.models import Application

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def demo_on(settings, tmp_path):
    settings.LLMRUM_DEMO = True
    settings.LLMRUM_DEMO_ERROR_RATE = 0.0
    settings.LLMRUM_DEMO_TOKEN_FILE = str(tmp_path / "demo-ingest-token")
    return settings


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(views, "gateway_chat", functools.partial(gateway_chat, sleep=lambda s: 0))


def test_the_demo_is_off_unless_enabled(client: Client, settings, db):
    settings.LLMRUM_DEMO = False
    assert client.get("/demo/").status_code == 404
    assert (
        client.post("/demo/v1/chat/completions", {}, content_type="application/json").status_code
        == 404
    )


def test_the_page_embeds_the_snippet_with_no_inline_script(client: Client, demo_on, db):
    created = application_create(name="Demo chat", slug="demo", origins=["http://testserver"])
    html = client.get("/demo/").content.decode()
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all(body.strip() == "" and "src=" in attrs for attrs, body in scripts)
    assert 'src="/static/llmrum/llmrum.min.js"' in html
    assert f'data-key="{created.application.public_key}"' in html
    assert 'data-chat-url="/demo/v1/chat/completions"' in html
    for action in ("stop", "regenerate", "edit", "feedback-up", "feedback-down"):
        assert f'data-llmrum="{action}"' in html
    assert 'id="no-token"' in html  # nothing handed over yet
    assert client.get("/static/demo/demo.js").status_code == 200


def test_the_page_says_when_there_is_no_demo_application(client: Client, demo_on, db):
    assert 'id="no-app"' in client.get("/demo/").content.decode()


def test_the_endpoint_streams_openai_chunks_and_continues_the_browser_trace(
    client: Client, demo_on, no_sleep, db
):
    response = client.post(
        "/demo/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": True},
        content_type="application/json",
        HTTP_TRACEPARENT=TRACEPARENT,
        HTTP_BAGGAGE="session.id=s-1",
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    body = b"".join(response.streaming_content).decode()
    assert body.startswith('data: {"id":"chatcmpl-') and body.endswith("data: [DONE]\n\n")
    assert '"model":"gpt-4o-mini"' in body and '"usage"' in body
    # No token handed over, so no spans: the Server-Timing names the caller's trace at least.
    assert "llmrum-now;desc=" in response["Server-Timing"]


def test_bad_requests(client: Client, demo_on, db):
    assert client.get("/demo/v1/chat/completions").status_code == 405
    response = client.post("/demo/v1/chat/completions", "x", content_type="text/plain")
    assert response.status_code == 415
    response = client.post("/demo/v1/chat/completions", "{", content_type="application/json")
    assert response.status_code == 400


def test_the_token_file_is_private_and_replaced_atomically(demo_on, tmp_path):
    path = demo_token_write("it_first")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    demo_token_write("it_second")
    assert demo_token_read() == "it_second"
    assert [p.name for p in tmp_path.iterdir()] == ["demo-ingest-token"]


def test_serve_hands_over_a_working_token_and_rotates_a_stale_one(demo_on, db, monkeypatch):
    monkeypatch.delenv("LLMRUM_DEMO_INGEST_TOKEN", raising=False)
    created = application_create(name="Demo chat", slug="demo", origins=[])
    token, rotated = demo_token_ensure(created.application, created.ingest_token)
    assert (token, rotated) == (created.ingest_token, False)
    app = Application.objects.get(slug="demo")
    assert demo_token_ensure(app) == (created.ingest_token, False)  # a restart keeps it
    demo_token_write("it_stale")  # the token was rotated elsewhere
    token, rotated = demo_token_ensure(app)
    assert rotated and token != created.ingest_token
    assert Application.objects.get(slug="demo").ingest_token_hash == token_hash(token)
    assert demo_token_read() == token


def test_a_token_from_the_environment_is_never_rotated(demo_on, db, monkeypatch):
    created = application_create(name="Demo chat", slug="demo", origins=[])
    monkeypatch.setenv("LLMRUM_DEMO_INGEST_TOKEN", "it_from_the_environment")
    assert demo_token_ensure(created.application) == ("it_from_the_environment", False)
    app = Application.objects.get(slug="demo")
    assert app.ingest_token_hash == token_hash(created.ingest_token)


def test_spans_go_to_a_loopback_host_or_the_configured_endpoint_only(rf, settings):
    settings.LLMRUM_DEMO_OTLP_ENDPOINT = ""
    settings.ALLOWED_HOSTS = ["*"]
    local = rf.post("/demo/v1/chat/completions", HTTP_HOST="localhost:8123")
    assert views._otlp_endpoint(local) == "http://localhost:8123/v1/traces"
    # The export carries the ingest token: a Host header must never send it elsewhere.
    elsewhere = rf.post("/demo/v1/chat/completions", HTTP_HOST="attacker.example:80")
    assert views._otlp_endpoint(elsewhere) == ""
    settings.LLMRUM_DEMO_OTLP_ENDPOINT = "http://10.0.0.5:8000/v1/traces"
    assert views._otlp_endpoint(elsewhere) == "http://10.0.0.5:8000/v1/traces"
