"""``GET|POST /api/v1/alert-rules``: a member creates and lists the rules of their
applications; a bad value is a 400 naming its field."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from correlator.alerts.models import AlertRule
from rumserver.applications import application_grant
from tests import factories

pytestmark = pytest.mark.django_db

RULE = {
    "app": "",
    "name": "Slow first token",
    "figure": "client_ttft_ms.p95",
    "operator": ">",
    "threshold": 2500,
    "window_minutes": 5,
    "min_turns": 20,
    "webhook_url": "https://hooks.slack.com/services/T000/B000/XXXX",
    "email_recipients": ["oncall@example.com"],
}


@pytest.fixture
def api():
    chat, other = factories.make_app("Chat"), factories.make_app("Other")
    alice = User.objects.create_user("alice", password="pw")
    application_grant(slug=chat.application.slug, username="alice")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    return client, chat.application, other.application


def test_it_creates_and_lists_a_rule(api):
    client, chat, other = api
    AlertRule.objects.create(
        application=other, name="theirs", figure="turns", operator="<", threshold=1
    )
    created = client.post("/api/v1/alert-rules", {**RULE, "app": chat.slug}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["app"] == chat.slug and body["figure"] == "client_ttft_ms.p95"
    assert body["state"] == "ok" and body["enabled"] is True and body["threshold"] == 2500.0
    listed = client.get("/api/v1/alert-rules")
    assert listed.status_code == 200
    assert [r["name"] for r in listed.json()] == ["Slow first token"]  # not the other app's
    assert client.get("/api/v1/alert-rules", {"app": other.slug}).status_code == 404
    assert client.get("/api/v1/alert-rules", {"app": chat.slug}).json()[0]["id"] == body["id"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("figure", "client_ttft_ms.p42"),
        ("figure", "rates"),
        ("figure", "app"),
        ("operator", ">="),
        ("threshold", "NaN"),
        ("threshold", "fast"),
        ("window_minutes", 0),
        ("email_recipients", ["not an address"]),
        ("webhook_url", "javascript:alert(1)"),
        ("app", "other-2"),  # not one of alice's
    ],
)
def test_a_bad_value_is_a_400_naming_its_field(api, field, value):
    client, chat, other = api
    body = {**RULE, "app": chat.slug, field: value}
    if field == "app":
        body["app"] = other.slug
    answer = client.post("/api/v1/alert-rules", body, format="json")
    assert answer.status_code == 400
    assert list(answer.json()) == [field]
    assert not AlertRule.objects.exists()


def test_it_needs_a_token_or_session():
    assert APIClient().get("/api/v1/alert-rules").status_code == 401
    assert APIClient().post("/api/v1/alert-rules", RULE, format="json").status_code == 401
