"""The admin: applications with the token shown once, read-only stitched rows
searchable by trace id, raw rows searchable by trace and session id."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from correlator import admin as correlator_admin
from correlator.models import Trace, Turn
from rumserver.models import Application, Score
from tests.reports.conftest import Stitched

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    return client


def shown_token(response) -> str:
    messages = [str(m) for m in response.context["messages"]]
    tokens = [t for m in messages for t in re.findall(r"it_[A-Za-z0-9_\-]+", m)]
    assert len(tokens) == 1, messages
    return tokens[0]


def test_a_new_application_shows_its_token_once(admin_client):
    r = admin_client.post("/admin/rumserver/application/add/", {
        "name": "Support bot", "slug": "support-bot", "allowed_origins": '["https://x.example"]',
        "sample_rate": "1.0", "retention_days": "30",
        "applicationmember_set-TOTAL_FORMS": "0", "applicationmember_set-INITIAL_FORMS": "0",
    }, follow=True)  # fmt: skip
    token = shown_token(r)
    app = Application.objects.get(slug="support-bot")
    assert app.ingest_token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert app.public_key.startswith("pk_")
    page = admin_client.get(f"/admin/rumserver/application/{app.pk}/change/").content.decode()
    assert token not in page and app.ingest_token_prefix in page


def test_rotating_shows_the_new_token_once_and_the_old_stops(admin_client, stitched: Stitched):
    app = stitched.app.application
    r = admin_client.post("/admin/rumserver/application/", {
        "action": "rotate_token", "_selected_action": [app.pk],
    }, follow=True)  # fmt: skip
    token = shown_token(r)
    assert token != stitched.app.ingest_token
    app.refresh_from_db()
    assert app.ingest_token_hash == hashlib.sha256(token.encode()).hexdigest()


@pytest.mark.parametrize(
    ("url", "term"),
    [
        ("/admin/correlator/trace/", "trace_id"),
        ("/admin/correlator/turn/", "trace_id"),
        ("/admin/correlator/turn/", "browser_span"),
        ("/admin/rumserver/span/", "trace_id"),
        ("/admin/rumserver/browserevent/", "trace_id"),
        ("/admin/rumserver/browsersession/", "session"),
    ],
)
def test_the_admin_finds_rows_by_trace_span_and_session_id(admin_client, stitched, url, term):
    value = getattr(stitched.golden, term)
    r = admin_client.get(url, {"q": value})
    assert r.status_code == 200
    assert r.context["cl"].result_count >= 1
    assert all(
        value in (str(getattr(obj, "trace_id", "")) + str(getattr(obj, "span_id", ""))
                  + str(getattr(obj, "session_id", "")) + str(getattr(obj, "trace", "")))
        for obj in r.context["cl"].result_list
    )  # fmt: skip


def test_stitched_rows_are_read_only(admin_client, stitched):
    trace = Trace.objects.get(trace_id=stitched.golden.trace_id)
    turn = Turn.objects.get(trace=trace)
    assert admin_client.get("/admin/correlator/trace/add/").status_code == 403
    page = admin_client.get(f"/admin/correlator/trace/{trace.pk}/change/")
    assert page.status_code == 200 and b'name="_save"' not in page.content
    assert admin_client.get(f"/admin/correlator/turn/{turn.pk}/change/").status_code == 200
    listing = admin_client.get("/admin/correlator/trace/", {"linked__exact": "0"}).content.decode()
    assert stitched.cors in listing and stitched.golden.trace_id not in listing
    assert (
        f"/reports/traces/{stitched.golden.trace_id}?app="
        in admin_client.get("/admin/correlator/trace/").content.decode()
    )


def test_big_change_lists_neither_count_nor_scan_every_row(admin_client, stitched, monkeypatch):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from rumserver.admin import CappedCountPaginator

    monkeypatch.setattr(CappedCountPaginator, "CAP", 3)
    with CaptureQueriesContext(connection) as queries:
        r = admin_client.get("/admin/correlator/turn/", {"outcome": "stopped"})
    assert [t.outcome for t in r.context["cl"].result_list] == ["stopped"]
    sql = " ".join(q["sql"] for q in queries).upper()
    assert "DISTINCT" not in sql  # the outcome filter's choices are fixed
    r = admin_client.get("/admin/correlator/trace/")
    assert r.context["cl"].result_count == 4  # capped at CAP + 1, not all 6
    assert len(r.context["cl"].result_list) == 6  # the page itself is complete


def listed(response) -> list:
    return list(response.context["cl"].result_list)


def test_stitched_lists_are_newest_first_by_time_with_rounded_figures(admin_client, stitched):
    traces = listed(admin_client.get("/admin/correlator/trace/"))
    by_time = list(Trace.objects.order_by("-start_ms", "-id"))
    assert traces == by_time and len(traces) == 6
    Turn.objects.filter(span_id=stitched.golden.browser_span).update(
        client_ttft_ms=620.123456, server_ttft_ms=0.004567
    )
    r = admin_client.get("/admin/correlator/turn/")
    assert listed(r) == list(Turn.objects.order_by("-t_send_ms", "-id"))
    page = r.content.decode()
    assert '<td class="field-client_ttft">620.12</td>' in page and "620.123456" not in page
    assert '<td class="field-server_ttft">0.00457</td>' in page


def test_score_values_are_rounded_in_their_list(admin_client, stitched):
    app = stitched.app.application
    Score.objects.create(app=app, trace_id=stitched.golden.trace_id, name="relevance",
                         value=0.833333333, received_at=timezone.now())  # fmt: skip
    page = admin_client.get("/admin/rumserver/score/").content.decode()
    assert '<td class="field-shown_value">0.83</td>' in page


def test_an_unnarrowed_list_orders_only_the_newest_rows_and_a_filter_sees_all(
    admin_client, stitched, monkeypatch
):
    monkeypatch.setattr(correlator_admin, "RECENT_ROWS", 2)
    newest_two = list(Trace.objects.order_by("-id")[:2])
    shown = listed(admin_client.get("/admin/correlator/trace/"))
    assert sorted(shown, key=lambda t: (-t.start_ms, -t.id)) == shown
    assert set(shown) == set(newest_two)
    assert len(listed(admin_client.get("/admin/correlator/trace/", {"state": "final"}))) == 6
    oldest = Trace.objects.order_by("id").first()
    assert admin_client.get(f"/admin/correlator/trace/{oldest.pk}/change/").status_code == 200


def test_the_admins_view_site_opens_the_reports(admin_client):
    page = admin_client.get("/admin/").content.decode()
    assert '<a href="/reports/">View site</a>' in page
    r = Client().get("/")
    assert (r.status_code, r["Location"]) == (302, "/reports/")
