"""Alert webhooks go to public addresses only, and to internal ones only inside
LLMRUM_WEBHOOK_ALLOWED_NETWORKS: a rule cannot make the worker POST into the
deployment's own network (the cloud's metadata service, an admin port)."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from urllib.error import URLError

import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from correlator.alerts.delivery import alert_events_deliver
from correlator.alerts.evaluate import alert_rules_evaluate
from correlator.alerts.models import AlertEvent, AlertRule
from correlator.alerts.webhook_guard import WebhookAddressRefused, address_allowed, guarded_opener
from rumserver.applications import application_grant
from tests import factories
from tests.alerts.conftest import stitched_turns
from tests.alerts.receiver import WebhookReceiver
from tests.alerts.test_api import RULE

pytestmark = pytest.mark.django_db

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.9", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),  # the cloud metadata service
        ("100.64.0.1", False),  # carrier-grade NAT
        ("0.0.0.0", False),
        ("224.0.0.1", False),  # multicast
        ("::1", False),
        ("fd00::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),  # loopback written as IPv6
        ("93.184.215.14", True),
        ("2606:4700::6810:85e5", True),
    ],
)
def test_only_public_addresses_unless_listed(address, allowed):
    assert address_allowed(address, ()) is allowed
    assert address_allowed("127.0.0.1", LOOPBACK)


def fire(client, created, url: str) -> AlertEvent:
    """A stop-rate rule with this webhook, breached, evaluated and delivered once."""
    stitched_turns(client, created, minutes_ago=3, outcome="stopped", n=3)
    AlertRule.objects.create(
        application=created.application, name="stops", figure="rates.stop_rate", operator=">",
        threshold=0.5, window_minutes=10, min_turns=2, webhook_url=url,
    )  # fmt: skip
    now = timezone.now() + timedelta(seconds=1)
    alert_rules_evaluate(now=now)
    assert alert_events_deliver(now=now) == 1
    return AlertEvent.objects.get()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_an_internal_webhook_is_not_sent_and_counts_as_failed(client, settings, webhook, host):
    settings.LLMRUM_WEBHOOK_ALLOWED_NETWORKS = ()
    url = webhook.url.replace("127.0.0.1", host)
    event = fire(client, factories.make_app(), url)
    assert webhook.bodies == []  # nothing reached it, by address or by a name for it
    assert event.notified_at is not None and event.delivery_failures == 1


def test_a_redirect_is_not_followed(client, webhook):
    redirecting = WebhookReceiver(status=307, location=webhook.url)
    try:
        event = fire(client, factories.make_app(), redirecting.url)
    finally:
        redirecting.close()
    assert len(redirecting.bodies) == 1 and webhook.bodies == []
    assert event.delivery_failures == 1


def test_an_allowed_network_gets_its_webhook(client, webhook):
    event = fire(client, factories.make_app(), webhook.url)  # conftest allows 127.0.0.0/8
    assert [b["state"] for b in webhook.bodies] == ["firing"]
    assert event.delivery_failures == 0


def test_the_api_and_the_admin_refuse_an_internal_address(settings, client):
    settings.LLMRUM_WEBHOOK_ALLOWED_NETWORKS = ()
    chat = factories.make_app("Chat").application
    alice = User.objects.create_user("alice", password="pw")
    application_grant(slug=chat.slug, username="alice")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=alice).key}")
    metadata = "http://169.254.169.254/latest/meta-data/"
    answer = api.post("/api/v1/alert-rules", {**RULE, "app": chat.slug, "webhook_url": metadata},
                      format="json")  # fmt: skip
    assert answer.status_code == 400
    assert "169.254.169.254 is an internal address" in answer.json()["webhook_url"][0]
    client.force_login(User.objects.create_superuser("root", password="pw"))
    form = {"application": chat.pk, "name": "errors", "figure": "rates.error_rate",
            "operator": ">", "threshold": "0.05", "window_minutes": "5", "min_turns": "20",
            "webhook_url": "http://[::1]:8080/hook", "email_recipients": "[]", "enabled": "on"}  # fmt: skip
    refused = client.post("/admin/alerts/alertrule/add/", form)
    assert refused.status_code == 200 and b"::1 is an internal address" in refused.content
    assert not AlertRule.objects.exists()
    # A name is checked when sent (what it resolves to then), so it is taken here.
    named = api.post("/api/v1/alert-rules", {**RULE, "app": chat.slug}, format="json")
    assert named.status_code == 201, named.content


def test_https_is_guarded_too(settings, webhook):
    """Refused on the connected socket, before any TLS handshake or byte is sent."""
    settings.LLMRUM_WEBHOOK_ALLOWED_NETWORKS = ()
    with pytest.raises(URLError) as refused:
        guarded_opener().open(webhook.url.replace("http:", "https:"), data=b"{}", timeout=5)
    assert isinstance(refused.value.reason, WebhookAddressRefused)
    assert "internal address" in str(refused.value.reason)
    assert webhook.bodies == []
