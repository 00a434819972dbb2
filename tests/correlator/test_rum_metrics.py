"""The RUM histograms and turn counters on GET /metrics (DESIGN.md §10.6): exact
bucket counts on stitched turns, labels escaped, and sums that never go down when
rollups are rebuilt or retention runs."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from correlator.analytics import rollups
from correlator.models import Rollup
from correlator.retention import retention_run
from correlator.stitch.sweep import sweep_run
from rumserver.models import Application
from tests import factories
from tests.factories import batch, turn_event

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "llmrum.rules.yml"
HOSTILE_MODEL = 'gpt"}\n# TYPE evil counter\\'
HOSTILE_SLUG = 'chat"}\nevil 1'


def samples(client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, read with prometheus-client's own parser."""
    response = client.get("/metrics")
    assert response.status_code == 200
    out = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def rum(all_samples: dict) -> dict:
    return {
        k: v
        for k, v in all_samples.items()
        if k[0].startswith(
            ("llmrum_turns", "llmrum_client_ttft", "llmrum_server_ttft", "llmrum_tbt")
        )
    }


def turn(ttft_ms: float, **overrides):
    t = factories.now_ms() - 120_000
    return turn_event(t_send=t, t_headers=t + 100, t_first_token=t + ttft_ms, **overrides)


def stitch_and_roll_up() -> None:
    now = timezone.now()
    sweep_run(now=now)
    rollups.rollups_refresh(now=now + timedelta(minutes=5))


@pytest.fixture
def stitched(beacon, chat_app):
    """Five turns of one application: four of gpt-4o-mini, one of a hostile model."""
    beacon.post(
        batch(
            [
                turn(300, conversation_id="c1"),
                turn(310, conversation_id="c2"),
                turn(1200, conversation_id="c3", outcome="stopped"),
                turn(7000, conversation_id="c4", outcome="abandoned"),
                turn(2500, conversation_id="c5", model=HOSTILE_MODEL),
            ]
        )
    )
    stitch_and_roll_up()
    return chat_app.application


def labels(**pairs: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(pairs.items()))


@pytest.mark.django_db
def test_it_exports_turns_and_client_ttft_buckets_exactly(client, stitched):
    got = samples(client)
    app, model = stitched.slug, "gpt-4o-mini"
    for outcome, n in {"completed": 2, "stopped": 1, "abandoned": 1, "error": 0}.items():
        assert got[("llmrum_turns_total", labels(app=app, model=model, outcome=outcome))] == n
    expected = {
        "0.05": 0, "0.1": 0, "0.25": 0, "0.5": 2, "0.75": 2, "1.0": 2, "1.5": 3,
        "2.0": 3, "3.0": 3, "5.0": 3, "10.0": 4, "20.0": 4, "30.0": 4, "60.0": 4, "+Inf": 4,
    }  # fmt: skip
    for le, n in expected.items():
        key = ("llmrum_client_ttft_seconds_bucket", labels(app=app, model=model, le=le))
        assert got[key] == n, le
    assert got[("llmrum_client_ttft_seconds_count", labels(app=app, model=model))] == 4
    total = got[("llmrum_client_ttft_seconds_sum", labels(app=app, model=model))]
    assert total == pytest.approx(0.3 + 0.31 + 1.2 + 7.0, rel=0.01)
    # Each turn's median gap between tokens (tbt_summary p50: 60 ms).
    tbt = ("llmrum_tbt_seconds_bucket", labels(app=app, model=model, le="0.075"))
    assert got[tbt] == 4
    assert got[("llmrum_tbt_seconds_bucket", labels(app=app, model=model, le="0.05"))] == 0
    # No gateway spans: the server histogram is there, empty.
    assert got[("llmrum_server_ttft_seconds_count", labels(app=app, model=model))] == 0


@pytest.mark.django_db
def test_a_hostile_model_and_slug_are_escaped(client, stitched):
    Application.objects.filter(pk=stitched.pk).update(slug=HOSTILE_SLUG)
    text = client.get("/metrics").content.decode()
    lines = text.splitlines()
    assert not [line for line in lines if line.startswith(("evil", "# TYPE evil"))]
    got = samples(client)  # parses, and the labels come back as they were
    key = ("llmrum_turns_total", labels(app=HOSTILE_SLUG, model=HOSTILE_MODEL, outcome="completed"))
    assert got[key] == 1
    le = (
        "llmrum_client_ttft_seconds_bucket",
        labels(app=HOSTILE_SLUG, model=HOSTILE_MODEL, le="3.0"),
    )
    assert got[le] == 1


@pytest.mark.django_db
def test_the_figures_never_go_down_across_a_rebuild_or_retention(client, stitched, beacon):
    before = rum(samples(client))
    assert before
    # A rebuild of every period recounts the same turns.
    now = timezone.now()
    day = rollups.floor(now - timedelta(minutes=2), rollups.DAY)
    marks = [
        (stitched.pk, period, rollups.floor(now - timedelta(minutes=2), period))
        for period in (rollups.MINUTE, rollups.HOUR)
    ]
    rollups.rollups_mark([*marks, (stitched.pk, rollups.DAY, day)], now=now)
    rebuilt_at = now + timedelta(minutes=5)
    assert rollups.rollups_refresh(now=rebuilt_at) == 3
    assert Rollup.objects.filter(period=rollups.DAY, computed_at=rebuilt_at).exists()
    assert rum(samples(client)) == before
    # One more turn only adds.
    beacon.post(batch([turn(400, conversation_id="c6")]))
    stitch_and_roll_up()
    after = rum(samples(client))
    assert set(after) >= set(before)
    assert all(after[k] >= v for k, v in before.items())
    key = (
        "llmrum_turns_total",
        labels(app=stitched.slug, model="gpt-4o-mini", outcome="completed"),
    )
    assert after[key] == before[key] + 1
    # This process converted the day's sketches before: it reads the rebuilt row again.
    count = ("llmrum_client_ttft_seconds_count", labels(app=stitched.slug, model="gpt-4o-mini"))
    assert after[count] == before[count] + 1
    # Retention past every turn deletes the minute rows and turns; days stay.
    retention_run(now=now + timedelta(days=stitched.retention_days + 2))
    assert not Rollup.objects.filter(period=rollups.MINUTE).exists()
    assert rum(samples(client)) == after


@pytest.mark.django_db
def test_the_shipped_alert_rules_name_series_that_metrics_exports(client, stitched):
    """deploy/prometheus/ is unit-tested by promtool on synthetic series; this pins
    their names to the ones a real scrape has."""
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    names = {n for rule in rules for n in re.findall(r"\bllmrum_\w+", rule["expr"])}
    assert names == {"llmrum_client_ttft_seconds_bucket", "llmrum_turns_total"}
    exported = {name for name, _ in samples(client)}
    assert names <= exported
