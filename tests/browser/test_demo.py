"""The demo end to end in real headless Chromium: a new user opens /demo/, sends a
message, stops the next answer and regenerates it; the simulated gateway and model
server export their spans over OTLP to the same server; after a sweep, the three
turns are stitched with the right outcomes, linked (browser, gateway and model spans
in one trace), and the regenerated one points at the stopped one."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.utils import timezone

from correlator.models import Turn
from correlator.stitch.sweep import sweep_run
from demo.telemetry import flush_all, shutdown_all
from demo.token import demo_token_write
from rumserver.applications import application_create
from rumserver.models import BrowserEvent, Span
from tests.browser.conftest import CHROMIUM
from tests.chromium import close_quietly, new_context

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
PASSWORD = "demo-pass-123"


@pytest.fixture
def demo_app(live_server: Any, settings: Any, tmp_path: Path) -> Any:
    settings.LLMRUM_DEMO = True
    settings.LLMRUM_DEMO_ERROR_RATE = 0.0  # the flow below needs answers, not the odd 429
    settings.LLMRUM_DEMO_TOKEN_FILE = str(tmp_path / "demo-ingest-token")
    created = application_create(name="Demo chat", slug="demo", origins=[live_server.url])
    demo_token_write(created.ingest_token)  # what `manage.py serve` hands over
    yield created.application
    shutdown_all()  # the exporters belong to this live server


@pytest.fixture
def page(browser: Any, live_server: Any, demo_app: Any) -> Any:
    context = new_context(browser)
    page = context.new_page()
    page.set_default_timeout(20_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    def console(message: Any) -> None:
        # Pages without an icon make the browser ask for /favicon.ico (a 404): not an error.
        if message.type == "error" and not message.location.get("url", "").endswith("favicon.ico"):
            errors.append(message.text)

    page.on("console", console)
    yield page
    close_quietly(context)
    assert not errors, errors


def answers(page: Any) -> Any:
    return page.locator("li.msg.assistant")


def wait_turns(page: Any, n: int) -> None:
    page.wait_for_selector(f"body[data-turns='{n}'][data-busy='0']")


def wait_until(predicate: Any, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_send_stop_regenerate_then_the_stitched_traces(page, live_server, demo_app):
    page.goto(f"{live_server.url}/demo/")
    assert page.locator("#no-token").count() == 0  # the token was handed over

    page.fill("#prompt", "What does llmrum measure?")
    page.click("#send")
    wait_turns(page, 1)
    assert answers(page).nth(0).get_attribute("data-state") == "completed"
    assert len(answers(page).nth(0).inner_text()) > 20

    page.fill("#prompt", "Tell me more, at length")
    page.click("#send")
    # Stop as soon as the first words are there.
    answers(page).nth(1).filter(has_text=re.compile(r"\w")).wait_for()
    page.click("#stop")
    wait_turns(page, 2)
    assert answers(page).nth(1).get_attribute("data-state") == "stopped"

    page.click("#regenerate")
    wait_turns(page, 3)
    assert answers(page).count() == 2  # the stopped answer was replaced
    assert answers(page).nth(1).get_attribute("data-state") == "completed"
    page.click("#thumbs-up")
    # Edit puts the last question back; sending it again is an intent correction.
    page.click("#edit")
    assert page.input_value("#prompt") == "Tell me more, at length"
    page.fill("#prompt", "Tell me more, briefly")
    page.click("#send")
    wait_turns(page, 4)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "demo-chat.png"), full_page=True)

    # The snippet's beacons, and the simulated services' spans (OTLP, same server).
    wait_until(
        lambda: BrowserEvent.objects.filter(app=demo_app, type="turn").count() == 4, "4 turns"
    )
    wait_until(
        lambda: BrowserEvent.objects.filter(app=demo_app, type="feedback").exists(), "feedback"
    )
    assert flush_all()
    wait_until(lambda: Span.objects.filter(app=demo_app).count() >= 12, "12 OTLP spans")
    sweep_run(now=timezone.now(), finalize_all=True)

    first, stopped, regenerated, edited = Turn.objects.filter(app=demo_app).order_by("t_send_ms")
    assert edited.intent_correction and not regenerated.intent_correction
    assert edited.outcome == "completed" and edited.trace.linked
    assert [t.outcome for t in (first, stopped, regenerated)] == ["completed", "stopped",
                                                                  "completed"]  # fmt: skip
    assert regenerated.regenerate_of == stopped.span_id
    assert stopped.regenerated and not first.regenerated
    for turn in (first, stopped, regenerated):
        assert turn.trace.linked, turn.trace_id
        spans = Span.objects.filter(app=demo_app, trace_id=turn.trace.trace_id)
        assert {turn.trace.role_of(span) for span in spans} == {"browser", "gateway", "model"}
        assert turn.model == "llama-3.1-8b-instruct"
        assert turn.server_ttft_ms is not None and turn.model_ttft_ms is not None
        assert turn.queue_ms is not None
        assert 150 <= turn.client_ttft_ms < 5000
    assert first.output_tokens and stopped.output_tokens < first.output_tokens + 300

    # The read API, as a staff user, tells the same.
    staff = get_user_model().objects.create_user("demo-staff", password=PASSWORD, is_staff=True)
    client = Client()
    client.force_login(staff)
    detail = client.get(f"/api/v1/traces/{stopped.trace.trace_id}").json()
    assert detail["linked"] and detail["turn"]["outcome"] == "stopped"
    assert {s["role"] for s in detail["spans"]} == {"browser", "gateway", "model"}
    gateway = next(
        s for s in detail["spans"] if s["role"] == "gateway" and s["name"].startswith("POST")
    )
    browser_span = next(s for s in detail["spans"] if s["role"] == "browser")
    assert gateway["parent_span_id"] == browser_span["span_id"] == stopped.span_id
    regen = client.get(f"/api/v1/traces/{regenerated.trace.trace_id}").json()
    assert regen["turn"]["regenerate_of"] == stopped.span_id

    # The waterfall of the stopped turn in the report pages.
    page.goto(f"{live_server.url}/reports/traces/{stopped.trace.trace_id}")
    if "/accounts/login/" in page.url:
        page.fill("#id_username", "demo-staff")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{live_server.url}/reports/traces/{stopped.trace.trace_id}")
    text = page.inner_text("body")
    assert stopped.trace.trace_id in text
    for name in ("llm_request", "chat llama-3.1-8b-instruct", "POST /demo/v1/chat/completions"):
        assert name in text
    page.screenshot(path=str(ARTIFACTS / "demo-trace.png"), full_page=True)
