from __future__ import annotations

import ipaddress
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from correlator.stitch.sweep import sweep_run
from rumserver.applications import CreatedApplication
from tests.alerts.receiver import WebhookReceiver
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp


def stitched_turns(
    client: Client, created: CreatedApplication, *, minutes_ago: float, outcome: str, n: int
) -> list[GoldenTurn]:
    """``n`` turns of this outcome sent about ``minutes_ago`` minutes ago, stitched.
    Server-Timing echoes place them in time whatever their age."""
    start = time.time() * 1000 - minutes_ago * 60_000
    goldens = [
        GoldenTurn(
            t0=start + i * 1000,
            outcome=outcome,
            session=f"s-{outcome}-{minutes_ago}-{i}",
            server_timing=True,
        )  # fmt: skip
        for i in range(n)
    ]
    for golden in goldens:
        send_beacon(client, created.application.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
    sweep_run(now=timezone.now())
    return goldens


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    yield receiver
    receiver.close()


@pytest.fixture
def failing_webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(status=500)
    yield receiver
    receiver.close()


@pytest.fixture(autouse=True)
def _local_webhooks_allowed(settings: Any) -> None:
    """The receivers here listen on 127.0.0.1, an internal address: allowed as an
    operator would allow their own network (test_webhook_guard takes it away)."""
    settings.LLMRUM_WEBHOOK_ALLOWED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"),)


@pytest.fixture(autouse=True)
def _locmem_mail(settings: Any) -> None:
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
