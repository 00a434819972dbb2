"""GET /metrics: Prometheus text for whoever runs llmrum."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from correlator.analytics.rollups import rollups_mark
from correlator.stitch.sweep import sweep_run
from rumserver.models import Application
from tests import factories
from tests.factories import batch, turn_event


def sample(text: str, name: str, *, default: float | None = None, **labels: str) -> float:
    """The sample's value; ``default`` when it is absent (a labelled counter has no sample
    until first counted, in a fresh PROMETHEUS_MULTIPROC_DIR), else absent fails."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{name}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if labels else rf"^{name} (\S+)$"
    match = re.search(pattern, text, re.MULTILINE)
    if match is None and default is not None:
        return default
    assert match, f"{name}{labels} not in:\n{text}"
    return float(match.group(1))


@pytest.mark.django_db
def test_metrics_count_ingest_and_show_the_backlog(client, beacon):
    before = client.get("/metrics").content.decode()
    accepted_before = sample(
        before, "llmrum_beacon_events_total", default=0.0, outcome="accepted", reason="ok"
    )
    backwards = turn_event()
    backwards["t_first_token"] = backwards["t_send"] - 5000  # a clock that went back
    beacon.post(
        batch([turn_event(), turn_event(), {"type": "nope", "id": "x", "ts": 1}, backwards])
    )
    beacon.post(batch(), key="pk_unknown")
    text = client.get("/metrics").content.decode()
    assert sample(text, "llmrum_beacon_events_total", outcome="accepted", reason="ok") == (
        accepted_before + 2
    )
    assert (
        sample(text, "llmrum_beacon_events_total", outcome="rejected", reason="invalid_event") >= 1
    )
    assert sample(text, "llmrum_beacon_events_total", outcome="rejected", reason="time_order") >= 1
    assert sample(text, "llmrum_beacon_requests_total", outcome="rejected", reason="forbidden") >= 1
    assert sample(text, "llmrum_dirty_traces") == 2
    assert sample(text, "llmrum_sweep_lag_seconds") >= 0
    sweep_run(now=timezone.now())
    text = client.get("/metrics").content.decode()
    assert sample(text, "llmrum_dirty_traces") == 0
    assert sample(text, "llmrum_sweep_stitched") == 2
    assert sample(text, "llmrum_traces_open") == 2
    # The turns' minute waits LLMRUM_ROLLUP_SETTLE_SECONDS for its rebuild.
    assert sample(text, "llmrum_rollups_pending") == 1
    sweep_run(now=timezone.now() + timedelta(seconds=31))
    text = client.get("/metrics").content.decode()
    assert sample(text, "llmrum_rollups_pending") == 0
    # A minute marked half a minute ago and not rebuilt yet shows as rollup lag.
    app_id = Application.objects.values_list("pk", flat=True).first()
    marked = timezone.now() - timedelta(seconds=30)
    rollups_mark({(app_id, "minute", marked.replace(second=0, microsecond=0))}, now=marked)
    text = client.get("/metrics").content.decode()
    assert sample(text, "llmrum_rollups_pending") == 1
    assert sample(text, "llmrum_rollup_lag_seconds") >= 30


@pytest.mark.django_db
@override_settings(LLMRUM_METRICS_TOKEN="s3cret")
def test_metrics_can_require_a_token(client):
    assert client.get("/metrics").status_code == 401
    r = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret")
    assert r.status_code == 200 and b"llmrum_dirty_traces" in r.content


@pytest.mark.django_db
def test_otlp_spans_are_counted(client):
    from tests.otlp import builders

    created = factories.make_app()
    body = builders.request([builders.span(), builders.span(trace_id=bytes(16))])
    client.generic("POST", "/v1/traces", body.SerializeToString(),
                   content_type="application/x-protobuf",
                   HTTP_AUTHORIZATION=f"Bearer {created.ingest_token}")  # fmt: skip
    text = client.get("/metrics").content.decode()
    assert sample(text, "llmrum_spans_total", outcome="rejected", reason="invalid_span") >= 1
    assert sample(text, "llmrum_otlp_requests_total", outcome="accepted", reason="ok") >= 1


@pytest.mark.django_db
def test_events_a_browser_dropped_are_counted(client, beacon):
    before = client.get("/metrics").content.decode()
    base = sample(before, "llmrum_sdk_dropped_events_total")
    assert beacon.post(batch(dropped=7)).status_code == 202
    r = beacon.post(batch())
    assert r.headers["Access-Control-Expose-Headers"] == "Retry-After"
    after = client.get("/metrics").content.decode()
    assert sample(after, "llmrum_sdk_dropped_events_total") == base + 7
