"""``/reports/alerts/``: an application's events newest first, each linked to its
window's traces, with users' text escaped."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from correlator.alerts.models import AlertEvent, AlertRule
from rumserver.applications import application_grant
from tests import factories

pytestmark = pytest.mark.django_db

HOSTILE = '<script>alert("rule")</script><img src=x onerror=alert(1)>'


def test_it_lists_events_newest_first_escaped_and_linked(client):
    chat = factories.make_app("Chat").application
    User.objects.create_user("alice", password="pw")
    application_grant(slug=chat.slug, username="alice")
    rule = AlertRule.objects.create(
        application=chat, name=HOSTILE, figure="rates.error_rate", operator=">", threshold=0.1
    )
    now = timezone.now().replace(microsecond=0)
    for minutes, state in [(30, "firing"), (10, "resolved")]:
        until = now - timedelta(minutes=minutes)
        AlertEvent.objects.create(rule=rule, state=state, value=0.2, turns=40,
                                  since=until - timedelta(minutes=5), until=until,
                                  created_at=until)  # fmt: skip
    client.login(username="alice", password="pw")
    page = client.get("/reports/alerts/")
    assert page.status_code == 200
    html = page.content.decode()
    assert HOSTILE not in html and "&lt;script&gt;alert(&quot;rule&quot;)&lt;/script&gt;" in html
    assert html.index('class="alert-event resolved"') < html.index('class="alert-event firing"')
    since = (now - timedelta(minutes=15)).isoformat().replace("+", "%2B").replace(":", "%3A")
    assert f'href="/reports/traces?app={chat.slug}&amp;since={since}' in html
    assert 'href="/reports/alerts/?app=' in html and 'aria-current="page">Alerts' in html


def test_it_shows_only_your_applications_events(client):
    chat, other = factories.make_app("Chat").application, factories.make_app("Other").application
    User.objects.create_user("alice", password="pw")
    application_grant(slug=chat.slug, username="alice")
    client.login(username="alice", password="pw")
    assert client.get("/reports/alerts/", {"app": other.slug}).status_code == 404
    assert client.get("/reports/alerts/").status_code == 200
