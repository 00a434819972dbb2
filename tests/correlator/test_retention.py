"""Retention deletes what is older than each application's retention days, in batches."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from correlator.analytics import rollups
from correlator.models import Conversation, Rollup, Trace, Turn
from correlator.retention import retention_run
from correlator.stitch.sweep import sweep_run
from rumserver.models import Application, BrowserEvent, BrowserSession, Span
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp

pytestmark = pytest.mark.django_db


def test_old_data_goes_recent_data_stays(client):
    created = factories.make_app()
    Application.objects.filter(pk=created.application.pk).update(retention_days=7)
    goldens = [GoldenTurn(t0=time.time() * 1000 - 2000, session=f"s{i}") for i in range(3)]
    for golden in goldens:
        send_beacon(client, created.application.public_key, golden.beacon())
        send_otlp(client, created.ingest_token, golden.gateway_request())
    sweep_run(now=timezone.now(), finalize_all=True)  # and its rollups rebuilt
    assert Trace.objects.count() == 3
    conversations = Conversation.objects.count()
    assert conversations >= 1
    # Nothing is old yet.
    assert sum(retention_run(now=timezone.now()).deleted.values()) == 0
    # A rebuild of those turns' minute still pending when their data expires.
    minute = rollups.minute_of(goldens[0].t0)
    rollups.rollups_mark({(created.application.pk, "minute", minute)}, now=timezone.now())
    # Eight days later, in batches of 2: everything is past seven days.
    result = retention_run(now=timezone.now() + timedelta(days=8), batch=2)
    assert result.deleted["traces"] == 3 and result.deleted["spans"] == 9
    assert result.deleted["events"] == 3 and result.deleted["sessions"] == 3
    assert (Trace.objects.count(), Turn.objects.count(), Span.objects.count()) == (0, 0, 0)
    assert (BrowserEvent.objects.count(), BrowserSession.objects.count()) == (0, 0)
    # The conversations' send spans went with their turns.
    assert result.deleted["conversations"] == conversations
    assert not Conversation.objects.exists()
    # Minute rollups went with the raw rows; hours and days still answer for the turns.
    assert result.deleted["minute rollups"] >= 1
    assert not Rollup.objects.filter(period="minute").exists()
    days = Rollup.objects.filter(period="day", dimension="").values_list("turns", flat=True)
    assert sum(days) == 3
    # The mark went too: rebuilding a minute whose turns are gone would empty its day.
    assert result.deleted["rollup marks"] == 1
    rollups.rollups_refresh(now=timezone.now() + timedelta(days=8))
    days = Rollup.objects.filter(period="day", dimension="").values_list("turns", flat=True)
    assert sum(days) == 3


def test_the_retention_command_runs(capsys):
    factories.make_app()
    call_command("retention")
    assert (
        "0 traces, 0 conversations, 0 spans, 0 events, 0 scores, 0 sessions, 0 minute rollups, "
        "0 rollup marks" in capsys.readouterr().out
    )


def test_llmrum_retention_days_caps_every_application(client, settings):
    """LLMRUM_RETENTION_DAYS is the most any raw data is kept: an application asking
    for 30 days keeps 5 when it is 5 (dropped by day on PostgreSQL, row by row else)."""
    settings.LLMRUM_RETENTION_DAYS = 5
    created = factories.make_app()
    assert created.application.retention_days == 30
    golden = GoldenTurn(t0=time.time() * 1000 - 2000)
    send_beacon(client, created.application.public_key, golden.beacon())
    send_otlp(client, created.ingest_token, golden.gateway_request())
    sweep_run(now=timezone.now(), finalize_all=True)
    stored = (Trace.objects.count(), BrowserEvent.objects.count(), Span.objects.count())
    assert stored[0] == stored[1] == 1 and stored[2] >= 3
    retention_run(now=timezone.now() + timedelta(days=4))
    assert (Trace.objects.count(), BrowserEvent.objects.count(), Span.objects.count()) == stored
    retention_run(now=timezone.now() + timedelta(days=7))
    assert (Trace.objects.count(), BrowserEvent.objects.count(), Span.objects.count()) == (0, 0, 0)
