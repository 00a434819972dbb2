"""GET /api/v1/metrics against a generated data set whose true percentiles and
rates this test computes on its own."""

from __future__ import annotations

import random
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from correlator.analytics import windows
from correlator.models import DirtyRollup, Rollup
from correlator.stitch.sweep import sweep_run
from tests import factories
from tests.correlator.golden import send_beacon

pytestmark = pytest.mark.django_db
UAS = {"desktop": factories.CHROME_UA, "mobile": factories.IPHONE_UA}


def nearest_rank(values: list[float], q: float) -> float | None:
    """Smallest value with at least q of all values at or below it (written apart
    from the implementation on purpose)."""
    if not values:
        return None
    return min(x for x in values if sum(y <= x for y in values) >= q * len(values))


@pytest.fixture
def data(client):
    rng = random.Random(7)
    created = factories.make_app()
    key = created.application.public_key
    base = time.time() * 1000 - 3_600_000
    turns = []  # what the test knows to be true
    for c in range(12):
        session = f"sess-{c // 2}"  # two conversations a session
        ua = "desktop" if (c // 2) % 3 else "mobile"  # a session keeps its first user agent
        previous = None
        for i in range(rng.randint(1, 4)):
            t_send = base + c * 60_000 + i * 5_000
            outcome = rng.choice(["completed"] * 6 + ["stopped", "abandoned", "error"])
            has_first = not (outcome == "abandoned" and rng.random() < 0.5)
            ttft = rng.uniform(150, 3000)
            regenerate = previous is not None and rng.random() < 0.3
            correction = i > 0 and not regenerate and rng.random() < 0.3
            span = secrets.token_hex(8)
            turn = factories.turn_event(
                trace_id=secrets.token_hex(16), span_id=span, t_send=t_send, ts=t_send + 4000,
                conversation_id=f"conv-{c}", turn_index=i, outcome=outcome,
                t_headers=t_send + 100, t_first_token=t_send + ttft if has_first else None,
                t_last_token=t_send + ttft + 1000 if has_first else None, t_end=t_send + 4000,
                tbt_summary={"count": 10, "p50": 30 + c, "p95": 60.0, "max": 90.0},
                output_tokens=11, usage={"input_tokens": 100 + i, "output_tokens": 11},
                regenerate_of=previous["span_id"] if regenerate else None,
                intent_correction=correction,
            )  # fmt: skip
            body = factories.batch([turn], session={"id": session})
            r = client.generic(
                "POST", f"/rum/v1/beacon?key={key}", factories.encode(body),
                content_type="text/plain", HTTP_ORIGIN=factories.CHAT_ORIGIN, HTTP_USER_AGENT=UAS[ua],
            )  # fmt: skip
            assert r.status_code == 202 and not r.json()["rejected"], r.content
            turns.append({**turn, "session": session, "device": ua, "ttft": ttft if has_first else None,
                          "regenerated": False})  # fmt: skip
            if regenerate:
                previous["regenerated"] = True
            previous = turns[-1]
    # Thumbs down on the first answer of conversation 1; hallucination scores.
    first_of_1 = next(t for t in turns if t["conversation_id"] == "conv-1")
    down = factories.action_event("feedback-down", turn_span_id=first_of_1["span_id"])
    send_beacon(client, key, factories.batch([down], session={"id": first_of_1["session"]}))
    scored = turns[:3]
    for trace, values in zip(scored, [(0.8, 0.2), (0.9,), (0.1,)], strict=True):
        for value in values:
            r = client.post("/api/v1/scores", {"trace_id": trace["trace_id"], "name": "hallucination",
                            "value": value}, content_type="application/json",
                            HTTP_AUTHORIZATION=f"Bearer {created.ingest_token}")  # fmt: skip
            assert r.status_code == 201
    sweep_run(now=timezone.now())
    staff = User.objects.create_user("staff", is_staff=True)
    api = Client()
    api.force_login(staff)
    return {"app": created, "turns": turns, "api": api, "voted_down": first_of_1["span_id"]}


def expected(turns: list[dict], voted_down: str) -> dict:
    n = len(turns)
    ttfts = [t["ttft"] for t in turns if t["ttft"] is not None]
    conversations: dict[str, list[dict]] = {}
    for t in turns:
        conversations.setdefault(t["conversation_id"], []).append(t)
    good = 0
    for convo in conversations.values():
        convo.sort(key=lambda t: t["t_send"])
        first = convo[0]
        bad = first["regenerated"] or first["span_id"] == voted_down or (
            len(convo) > 1 and convo[1]["intent_correction"])  # fmt: skip
        good += not bad
    return {
        "turns": n,
        "sessions": len({t["session"] for t in turns}),
        "conversations": len(conversations),
        "client_ttft_ms": {
            k: nearest_rank(ttfts, q)
            for k, q in {"p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}.items()
        },  # fmt: skip
        "tbt_p50": nearest_rank([float(t["tbt_summary"]["p50"]) for t in turns], 0.5),
        "input_tokens": sum(t["usage"]["input_tokens"] for t in turns),
        "rates": {
            "stop_rate": sum(t["outcome"] == "stopped" for t in turns) / n,
            "abandonment_rate": sum(t["outcome"] == "abandoned" for t in turns) / n,
            "abandonment_before_first_token_rate": sum(
                t["outcome"] == "abandoned" and t["ttft"] is None for t in turns
            )
            / n,  # fmt: skip
            "error_rate": sum(t["outcome"] == "error" for t in turns) / n,
            "regenerate_rate": sum(bool(t["regenerate_of"]) for t in turns) / n,
            "first_response_accuracy": good / len(conversations),
            "hallucination_rate": 1 / 3,  # latest scores 0.2, 0.9, 0.1
        },
        "intent_corrections_per_conversation": sum(t["intent_correction"] for t in turns)
        / len(conversations),
    }


def test_metrics_match_the_truth(data):
    r = data["api"].get(f"/api/v1/metrics?app={data['app'].application.slug}")
    assert r.status_code == 200, r.content
    body = r.json()
    truth = expected(data["turns"], data["voted_down"])
    for key in ("turns", "sessions", "conversations", "input_tokens"):
        assert body[key] == truth[key], key
    for q, value in truth["client_ttft_ms"].items():
        assert body["client_ttft_ms"][q] == pytest.approx(value, abs=0.01), q  # epoch-ms doubles
    assert body["tbt_ms"]["p50"] == truth["tbt_p50"]
    assert body["server_ttft_ms"] == {"p50": None, "p75": None, "p95": None, "p99": None}
    for rate, value in truth["rates"].items():
        assert body["rates"][rate] == pytest.approx(value), rate
    assert body["intent_corrections_per_conversation"] == pytest.approx(
        truth["intent_corrections_per_conversation"]
    )
    assert body["turns_per_session"] == pytest.approx(truth["turns"] / truth["sessions"])
    assert body["groups"] == []
    assert (body["percentiles"], body["percentiles_relative_error"]) == ("exact", 0.0)


def test_metrics_group_by_device(data):
    r = data["api"].get(f"/api/v1/metrics?app={data['app'].application.slug}&group_by=device")
    groups = {g["key"]: g for g in r.json()["groups"]}
    assert set(groups) == {"desktop", "mobile"}
    for device in ("desktop", "mobile"):
        subset = [t for t in data["turns"] if t["device"] == device]
        assert groups[device]["turns"] == len(subset)
        ttfts = [t["ttft"] for t in subset if t["ttft"] is not None]
        assert groups[device]["client_ttft_ms"]["p95"] == pytest.approx(
            nearest_rank(ttfts, 0.95), abs=0.01
        )


def test_metrics_windows_and_errors(data):
    api, slug = data["api"], data["app"].application.slug
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat().replace("+00:00", "Z")
    r = api.get("/api/v1/metrics", {"app": slug, "since": future})
    assert r.status_code == 400 and "since" in r.json()
    past = datetime.now(UTC) - timedelta(days=10)
    r = api.get("/api/v1/metrics", {"app": slug, "since": past.isoformat(),
                                    "until": (past + timedelta(hours=1)).isoformat()})  # fmt: skip
    assert r.status_code == 200 and r.json()["turns"] == 0
    assert r.json()["rates"]["stop_rate"] is None
    assert api.get("/api/v1/metrics?app=nope").status_code == 404
    assert api.get("/api/v1/metrics?group_by=colour&app=" + slug).status_code == 400
    outsider = User.objects.create_user("eve")
    c = Client()
    c.force_login(outsider)
    assert c.get(f"/api/v1/metrics?app={slug}").status_code == 404


@pytest.mark.parametrize("settled", [True, False])
def test_rollups_answer_the_same_within_their_documented_error(data, settings, settled):
    """Above LLMRUM_METRICS_EXACT_TURNS the answer comes from rollups: counts and
    rates exact, percentiles within 1 %, distinct counts (linear counting) exact at
    this size. Minutes the sweeps marked less than LLMRUM_ROLLUP_SETTLE_SECONDS ago
    are not rebuilt yet: their turns are read raw, and the answer is the same."""
    settings.LLMRUM_METRICS_EXACT_TURNS = 0
    if settled:
        settings.LLMRUM_ROLLUP_SETTLE_SECONDS = 0
        sweep_run(now=timezone.now())
        assert Rollup.objects.filter(period="day").exists()
    assert DirtyRollup.objects.exists() is not settled
    slug = data["app"].application.slug
    now = timezone.now()
    app_id = data["app"].application.pk
    counted = windows.window_turn_count(app_id=app_id, since=now - timedelta(days=2), until=now)
    assert counted == len(data["turns"])  # so the answer below comes from rollups
    body = data["api"].get(f"/api/v1/metrics?app={slug}").json()
    truth = expected(data["turns"], data["voted_down"])
    for key in ("turns", "sessions", "conversations", "input_tokens"):
        assert body[key] == truth[key], key
    for q, value in truth["client_ttft_ms"].items():
        assert body["client_ttft_ms"][q] == pytest.approx(value, rel=0.01), q
    assert body["tbt_ms"]["p50"] == pytest.approx(truth["tbt_p50"], rel=0.01)
    assert body["server_ttft_ms"] == {"p50": None, "p75": None, "p95": None, "p99": None}
    for rate, value in truth["rates"].items():
        assert body["rates"][rate] == pytest.approx(value), rate
    assert body["turns_per_session"] == pytest.approx(truth["turns"] / truth["sessions"])
    assert (body["percentiles"], body["percentiles_relative_error"]) == ("sketch", 0.01)
    page = data["api"].get(f"/reports/?app={slug}&range=24h").content.decode()
    assert "percentiles are from rollup sketches, within 1% of the exact value" in page

    grouped = data["api"].get(f"/api/v1/metrics?app={slug}&group_by=device").json()["groups"]
    groups = {g["key"]: g for g in grouped}
    for device in ("desktop", "mobile"):
        subset = [t for t in data["turns"] if t["device"] == device]
        assert groups[device]["turns"] == len(subset)
        ttfts = [t["ttft"] for t in subset if t["ttft"] is not None]
        assert groups[device]["client_ttft_ms"]["p95"] == pytest.approx(
            nearest_rank(ttfts, 0.95), rel=0.01
        )


def test_rollups_follow_late_feedback_and_resweeps(data, settings):
    """A thumbs-down that names its turn's trace re-stitches it and rebuilds that
    minute's rollups; sweeping again changes nothing."""
    settings.LLMRUM_METRICS_EXACT_TURNS = 0
    settings.LLMRUM_ROLLUP_SETTLE_SECONDS = 0  # rebuilt by the sweep itself
    api, slug = data["api"], data["app"].application.slug
    sweep_run(now=timezone.now())
    rows = sorted(Rollup.objects.values_list("period", "start", "dimension", "key", "turns"))
    assert rows and {r[0] for r in rows} <= {"minute", "hour", "day"}
    sweep_run(now=timezone.now())
    assert (
        sorted(Rollup.objects.values_list("period", "start", "dimension", "key", "turns")) == rows
    )

    turns = data["turns"]
    by_conversation: dict[str, list[dict]] = {}
    for t in sorted(turns, key=lambda t: t["t_send"]):
        by_conversation.setdefault(t["conversation_id"], []).append(t)
    victim = next(
        c[0] for c in by_conversation.values()
        if not c[0]["regenerated"] and c[0]["span_id"] != data["voted_down"]
        and not (len(c) > 1 and c[1]["intent_correction"])
    )  # fmt: skip
    down = factories.action_event("feedback-down", turn_span_id=victim["span_id"])
    down["trace_id"] = victim["trace_id"]  # the SDK names the turn's trace: it gets re-stitched
    send_beacon(
        Client(), data["app"].application.public_key,
        factories.batch([down], session={"id": victim["session"]}),
    )  # fmt: skip
    sweep_run(now=timezone.now())
    good_before = expected(turns, data["voted_down"])["rates"]["first_response_accuracy"]
    body = api.get(f"/api/v1/metrics?app={slug}").json()
    assert body["rates"]["first_response_accuracy"] == pytest.approx(
        good_before - 1 / len(by_conversation)
    )
