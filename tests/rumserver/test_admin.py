"""Admin pages for applications: the token is shown once, on create and on rotate."""

from __future__ import annotations

import re
import time

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from correlator.stitch.sweep import sweep_run
from rumserver.applications import token_hash
from rumserver.models import Application, ApplicationMember
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    admin = User.objects.create_superuser("alice", "alice@example.com", "pw")
    client.force_login(admin)
    return client


def shown_token(response) -> str:
    text = response.content.decode()
    match = re.search(r"shown once, copy it now\): (it_[A-Za-z0-9_-]+)", text)
    assert match, "the token is not shown"
    return match.group(1)


def test_creating_an_application_in_the_admin_shows_its_token_once(staff_client):
    bob = User.objects.create_user("bob")
    r = staff_client.post(
        "/admin/rumserver/application/add/",
        {
            "name": "Admin Made",
            "slug": "admin-made",
            "allowed_origins": '["https://Chat.Example.com/"]',
            "sample_rate": "1.0",
            "retention_days": "30",
            "applicationmember_set-TOTAL_FORMS": "1",
            "applicationmember_set-INITIAL_FORMS": "0",
            "applicationmember_set-0-user": str(bob.pk),
        },
        follow=True,
    )
    assert r.status_code == 200
    token = shown_token(r)
    app = Application.objects.get(slug="admin-made")
    assert app.public_key.startswith("pk_")
    assert app.ingest_token_hash == token_hash(token)
    assert app.allowed_origins == ["https://chat.example.com"]
    assert ApplicationMember.objects.filter(application=app, user=bob).exists()
    # Later pages never show it again.
    page = staff_client.get(f"/admin/rumserver/application/{app.pk}/change/")
    assert token not in page.content.decode()


def test_the_rotate_action_shows_a_new_token(staff_client):
    created = factories.make_app()
    r = staff_client.post(
        "/admin/rumserver/application/",
        {"action": "rotate_token", "_selected_action": [created.application.pk]},
        follow=True,
    )
    token = shown_token(r)
    assert token != created.ingest_token
    created.application.refresh_from_db()
    assert created.application.ingest_token_hash == token_hash(token)


def test_the_span_list_shows_each_spans_role_in_its_stitched_trace(staff_client):
    """Ingest stores no role; the list shows what the stitch decided for the trace."""
    created = factories.make_app()
    golden = GoldenTurn(t0=time.time() * 1000 - 60_000)
    send_beacon(staff_client, created.application.public_key, golden.beacon())
    send_otlp(staff_client, created.ingest_token, golden.gateway_request())
    send_otlp(staff_client, created.ingest_token, golden.model_request())
    sweep_run(now=timezone.now(), finalize_all=True)
    page = staff_client.get(f"/admin/rumserver/span/?q={golden.trace_id}").content.decode()
    cells = r'<td class="field-trace_role">(\w+)</td><td class="field-service">([^<]*)</td>'
    assert sorted(re.findall(cells, page)) == [
        ("browser", "browser"),
        ("gateway", "chat-gateway"),
        ("gateway", "chat-gateway"),
        ("model", "vllm"),
    ]


def test_raw_data_admin_pages_open(staff_client):
    for model in (
        "browsersession",
        "browserevent",
        "span",
        "dirtytrace",
        "applicationmember",
        "score",
    ):
        assert staff_client.get(f"/admin/rumserver/{model}/?q=abc").status_code == 200, model


@pytest.mark.parametrize(
    ("origins", "message"),
    [('["ftp://x.example.com"]', "not an origin"), ('{"a": 1}', "A JSON list of origins")],
)
def test_a_bad_origin_in_the_admin_is_a_form_error(staff_client, origins, message):
    r = staff_client.post(
        "/admin/rumserver/application/add/",
        {
            "name": "Bad",
            "slug": "bad",
            "allowed_origins": origins,
            "sample_rate": "1.0",
            "retention_days": "30",
            "applicationmember_set-TOTAL_FORMS": "0",
            "applicationmember_set-INITIAL_FORMS": "0",
        },
    )
    assert r.status_code == 200
    assert message in r.content.decode()
    assert not Application.objects.filter(slug="bad").exists()
