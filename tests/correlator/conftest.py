from __future__ import annotations

import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from correlator.stitch.sweep import sweep_run
from rumserver.applications import application_grant
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp


@pytest.fixture
def world(client: Client, db: Any) -> dict[str, Any]:
    """Two applications with stitched traces; alice is a member of the first only."""
    chat, other = factories.make_app("Chat"), factories.make_app("Other")
    alice = User.objects.create_user("alice", password="pw")
    application_grant(slug=chat.application.slug, username="alice")
    goldens = []
    for i, (created, outcome) in enumerate(
        [(chat, "completed"), (chat, "stopped"), (chat, "completed"), (other, "completed")]
    ):
        golden = GoldenTurn(t0=time.time() * 1000 - 60_000 + i * 1000, outcome=outcome,
                            session=f"s{i}", server_timing=True)  # fmt: skip
        send_beacon(client, created.application.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
        send_otlp(client, created.ingest_token, golden.model_request())
        goldens.append(golden)
    sweep_run(now=timezone.now())
    return {"chat": chat, "other": other, "alice": alice, "goldens": goldens}
