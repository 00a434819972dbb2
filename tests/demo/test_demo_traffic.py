"""manage.py demo_traffic: generated traffic through the real ingest, stitched."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from itertools import pairwise

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.utils import timezone
from django.utils.html import escape
from rest_framework.authtoken.models import Token

from correlator.models import Trace, Turn
from demo.model_metrics import _Requests, demo_servers, server_samples
from demo.simulator import MODELS
from rumserver.models import (
    ApplicationMember,
    BrowserEvent,
    BrowserSession,
    Score,
    Span,
)
from tests import factories

TURNS = 300


@pytest.fixture
def filled(db):
    app = factories.make_app().application
    other = factories.make_app().application
    call_command("demo_traffic", turns=TURNS, app=app.slug, days=7, seed=7, no_progress=True)
    return app, other


def test_n_turns_become_n_stitched_turns_of_the_chosen_app(filled):
    app, other = filled
    assert Turn.objects.filter(app=app).count() == TURNS
    assert BrowserEvent.objects.filter(app=app, type="turn").count() == TURNS
    assert not Turn.objects.filter(app=other).exists()
    assert not Trace.objects.filter(app=app, state="open").exists()


def test_every_outcome_and_action_is_there(filled):
    app, _ = filled
    turns = Turn.objects.filter(app=app)
    outcomes = Counter(turns.values_list("outcome", flat=True))
    assert set(outcomes) == {"completed", "stopped", "error", "abandoned"}
    assert outcomes["completed"] > TURNS * 0.6
    assert turns.filter(outcome="abandoned", client_ttft_ms__isnull=True).exists()
    assert turns.filter(outcome="error", status__in=[429, 500]).exists()
    assert turns.exclude(regenerate_of="").exists() and turns.filter(regenerated=True).exists()
    assert turns.filter(intent_correction=True).exists()
    feedback = BrowserEvent.objects.filter(app=app, type="feedback")
    assert {e.data["value"] for e in feedback} == {"up", "down"}
    scores = Score.objects.filter(app=app, name="hallucination")
    assert scores.count() > 10 and scores.filter(value__gte=0.5).exists()


def test_several_models_browsers_and_devices(filled):
    app, _ = filled
    assert (
        len(set(Turn.objects.filter(app=app).exclude(model="").values_list("model", flat=True)))
        >= 4
    )
    sessions = BrowserSession.objects.filter(app=app)
    assert len(set(sessions.values_list("browser", flat=True))) >= 4
    assert {"desktop", "mobile"} <= set(sessions.values_list("device_class", flat=True))
    assert len(set(sessions.values_list("os", flat=True))) >= 4


def test_most_turns_are_linked_some_are_not(filled):
    app, _ = filled
    traces = Trace.objects.filter(app=app)
    linked = traces.filter(linked=True).count()
    assert linked > TURNS * 0.8
    assert traces.filter(propagation="no_server_spans").exists()
    assert traces.filter(propagation="no_browser_root").exists()
    assert Span.objects.filter(app=app, role="browser").exists()
    # The other roles are the stitch's, kept per service on each trace.
    decided = traces.values_list("roles", flat=True)
    assert {role for roles in decided for role in roles.values()} == {"gateway", "model"}
    # A linked self-hosted turn has its model span and the times that come from it.
    with_model = Turn.objects.filter(app=app, model_ttft_ms__isnull=False, queue_ms__isnull=False)
    assert with_model.count() > TURNS * 0.3
    assert Turn.objects.filter(app=app, server_ttft_ms__isnull=False).count() > TURNS * 0.7


def test_spread_over_the_days(filled):
    app, _ = filled
    sends = list(Turn.objects.filter(app=app).values_list("t_send_ms", flat=True))
    assert max(sends) - min(sends) > 4 * 86_400_000


def test_an_unknown_app_is_refused(db):
    with pytest.raises(CommandError, match="no application"):
        call_command("demo_traffic", turns=5, app="nope", no_progress=True)


def test_a_seed_gives_the_same_traffic_whatever_the_time(db):
    from datetime import timedelta

    from django.utils import timezone

    from demo.traffic import TrafficGenerator, TrafficOptions

    app = factories.make_app().application
    now = timezone.now()

    def trace_ids(at, seed=5):
        generator = TrafficGenerator(app, TrafficOptions(turns=40, seed=seed), at)
        return [t.trace_id for _, turns, _, _ in generator.sessions() for t in turns]

    assert trace_ids(now) == trace_ids(now + timedelta(hours=7, minutes=13))
    assert trace_ids(now) != trace_ids(now, seed=6)


def test_the_demo_servers_state_is_on_the_model_server_answer(filled, client):
    """demo_traffic also sends its vLLM servers' and GPUs' metrics through the metrics
    ingest: a new user's model-server page shows each self-hosted model's server."""
    app, other = filled
    user = User.objects.create_user("viewer")
    ApplicationMember.objects.create(application=app, user=user)
    token = Token.objects.create(user=user).key
    until = timezone.now()
    since = until - timedelta(days=1)
    r = client.get(
        "/api/v1/model-servers",
        {"app": app.slug, "since": since.isoformat(), "until": until.isoformat()},
        HTTP_AUTHORIZATION=f"Token {token}",
    )
    assert r.status_code == 200, r.content
    servers = {s["service"]: s for s in r.json()["servers"]}
    self_hosted = {f"vllm-{m.name.split('-instruct')[0]}" for m in MODELS if m.self_hosted}
    assert set(servers) == self_hosted
    for server in servers.values():
        running = [v for v in server["requests_running"] if v is not None]
        assert running and max(running) > 0  # the working day is busy
        assert all(0 <= v <= 1 for v in server["kv_cache_usage"] if v is not None)
        assert any(v and v > 0 for v in server["generation_tokens_per_second"])
        assert any(v and v > 0 for v in server["gpu_utilization_percent"])
    # Only the chosen application has them.
    ApplicationMember.objects.create(application=other, user=user)
    r = client.get(
        "/api/v1/model-servers",
        {"app": other.slug, "since": since.isoformat(), "until": until.isoformat()},
        HTTP_AUTHORIZATION=f"Token {token}",
    )
    assert r.status_code == 200 and r.json()["servers"] == [], r.content


def test_the_demo_servers_load_includes_the_demos_own_requests(db):
    """A server's running requests at a scrape count the stored requests running then."""
    server = demo_servers()[0]
    start = 1_700_000_000 * 10**9
    step = 60 * 10**9
    own = _Requests(runs=[(start + step - 5, start + step + 5)] * 7, waits=[])
    quiet = random.Random(1)
    alone = list(
        server_samples(server, _Requests(), start_ns=start, step_ns=step, count=3, rng=quiet)
    )
    again = random.Random(1)
    loaded = list(server_samples(server, own, start_ns=start, step_ns=step, count=3, rng=again))
    demand = [s.running + s.waiting for s in loaded]
    assert demand[1] == alone[1].running + alone[1].waiting + 7
    assert demand[0] == alone[0].running + alone[0].waiting
    # Counters only grow; the TTFT histogram is cumulative.
    assert [s.generation_tokens for s in loaded] == sorted(s.generation_tokens for s in loaded)
    assert all(sum(a.ttft_counts) <= sum(b.ttft_counts) for a, b in pairwise(loaded))


def test_the_pages_own_errors_are_on_the_errors_page(filled, client):
    """A few sessions hit one of the chat page's bugs: the errors page groups them."""
    app, _ = filled
    errors = BrowserEvent.objects.filter(app=app, type="error")
    assert errors.exists()
    user = User.objects.create_user("viewer", password="pw-123456789")
    ApplicationMember.objects.create(application=app, user=user)
    client.force_login(user)
    r = client.get("/reports/errors/", {"app": app.slug, "range": "7d"})
    assert r.status_code == 200
    page = r.content.decode()
    for message in {e.data["message"] for e in errors}:
        assert escape(message) in page
