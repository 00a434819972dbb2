"""The read API: /api/v1/traces and /api/v1/traces/<trace_id> (DESIGN.md §7)."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from correlator.services import sweep_run
from rumserver.applications import application_grant
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(client):
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


def as_user(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_a_trace_reads_back_with_spans_and_turn(world):
    golden = world["goldens"][0]
    r = as_user(world["alice"]).get(f"/api/v1/traces/{golden.trace_id}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {"trace_id", "app", "state", "linked", "clock_skew_ms", "spans", "turn"}
    assert (body["trace_id"], body["app"], body["state"], body["linked"]) == (
        golden.trace_id, world["chat"].application.slug, "open", True)  # fmt: skip
    assert body["clock_skew_ms"] == pytest.approx(10.0, abs=0.01)  # epoch-ms doubles
    spans = body["spans"]
    assert [s["role"] for s in spans] == ["browser", "gateway", "gateway", "model"]
    for span in spans:
        assert set(span) == {"span_id", "parent_span_id", "role", "name", "service", "start_ms",
                             "end_ms", "attributes"}  # fmt: skip
    assert spans[0]["start_ms"] == pytest.approx(golden.t0 + 10, abs=0.01)  # skew-corrected
    assert spans[3]["attributes"]["gen_ai.latency.time_to_first_token"] == 0.45
    turn = body["turn"]
    assert set(turn) == {
        "session_id", "conversation_id", "turn_index", "outcome", "regenerated", "regenerate_of",
        "client_ttft_ms", "server_ttft_ms", "model_ttft_ms", "queue_ms", "network_overhead_ms",
        "tbt_p50_ms", "tbt_p95_ms", "tbt_max_ms", "tpot_ms", "output_tokens", "input_tokens",
        "model", "browser", "os", "device",
    }  # fmt: skip
    assert (turn["session_id"], turn["outcome"], turn["regenerate_of"]) == ("s0", "completed", None)
    assert (turn["client_ttft_ms"], turn["server_ttft_ms"], turn["network_overhead_ms"]) == (
        pytest.approx(620), pytest.approx(520), pytest.approx(100))  # fmt: skip
    assert (turn["browser"], turn["os"], turn["device"]) == ("Other", "Other", "other")


def test_a_member_cannot_read_another_applications_trace(world):
    foreign = world["goldens"][3]
    r = as_user(world["alice"]).get(f"/api/v1/traces/{foreign.trace_id}")
    assert r.status_code == 404
    listed = as_user(world["alice"]).get("/api/v1/traces").json()["results"]
    assert foreign.trace_id not in {t["trace_id"] for t in listed}


def test_staff_see_every_application(world):
    staff = User.objects.create_user("root", is_staff=True)
    r = as_user(staff).get("/api/v1/traces")
    assert len(r.json()["results"]) == 4


def test_the_list_is_newest_first_and_filters(world):
    c = as_user(world["alice"])
    traces = c.get("/api/v1/traces").json()["results"]
    assert [t["trace_id"] for t in traces] == [g.trace_id for g in reversed(world["goldens"][:3])]
    stopped = c.get("/api/v1/traces?outcome=stopped").json()["results"]
    assert [t["trace_id"] for t in stopped] == [world["goldens"][1].trace_id]
    slow = c.get("/api/v1/traces?min_client_ttft_ms=700").json()["results"]
    assert slow == []
    model = c.get("/api/v1/traces?model=meta-llama/Llama-3.1-8B").json()["results"]
    assert len(model) == 3
    assert c.get("/api/v1/traces?outcome=exploded").status_code == 400


def test_the_list_pages_by_cursor(world):
    c = as_user(world["alice"])
    first = c.get("/api/v1/traces?page_size=2").json()
    assert len(first["results"]) == 2 and first["next"]
    second = c.get(first["next"]).json()
    assert len(second["results"]) == 1 and second["next"] is None
    ids = [t["trace_id"] for t in first["results"] + second["results"]]
    assert len(set(ids)) == 3


def test_a_drf_token_authenticates_and_anonymous_is_refused(world):
    token = Token.objects.create(user=world["alice"])
    c = Client()
    assert c.get("/api/v1/traces").status_code in (401, 403)
    r = c.get("/api/v1/traces", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert r.status_code == 200 and len(r.json()["results"]) == 3
    assert c.get("/api/v1/traces", HTTP_AUTHORIZATION="Token nope").status_code == 401


def test_drf_create_token_command_exists(world):
    call_command("drf_create_token", "alice")
    assert Token.objects.filter(user=world["alice"]).exists()


def test_the_openapi_schema_describes_the_api(client, world):
    client.force_login(world["alice"])
    r = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200
    schema = r.json()
    assert schema["openapi"].startswith("3.")
    assert {"/api/v1/traces", "/api/v1/traces/{trace_id}"} <= set(schema["paths"])


def test_the_openapi_schema_describes_scores_and_metrics(client, world):
    client.force_login(world["alice"])
    r = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert r.status_code == 200
    schema = r.json()
    components = schema["components"]

    def resolve(node):
        ref = node.get("$ref")
        return components["schemas"][ref.rsplit("/", 1)[-1]] if ref else node

    post = schema["paths"]["/api/v1/scores"]["post"]
    body = resolve(post["requestBody"]["content"]["application/json"]["schema"])
    assert {"trace_id", "name", "value", "comment"} == set(body["properties"])
    assert set(body["required"]) == {"trace_id", "name", "value"}
    assert body["properties"]["trace_id"]["type"] == "string"
    assert body["properties"]["value"]["type"] == "number"
    created = resolve(post["responses"]["201"]["content"]["application/json"]["schema"])
    assert {"id", "trace_id", "name", "value"} == set(created["properties"])
    for status in ("400", "401", "413", "415", "503"):
        error = resolve(post["responses"][status]["content"]["application/json"]["schema"])
        assert {"error", "field"} == set(error["properties"])
    (requirement,) = post["security"]
    (scheme_name,) = requirement
    assert components["securitySchemes"][scheme_name] == {
        "type": "http",
        "scheme": "bearer",
        "description": components["securitySchemes"][scheme_name]["description"],
    }

    metrics = schema["paths"]["/api/v1/metrics"]["get"]["responses"]["200"]
    answer = resolve(metrics["content"]["application/json"]["schema"])
    assert {"app", "since", "until", "turns", "client_ttft_ms", "rates", "groups"} <= set(
        answer["properties"]
    )


def test_list_items_add_start_end_and_health(world):
    item = as_user(world["alice"]).get("/api/v1/traces").json()["results"][0]
    assert {"start_ms", "end_ms", "span_count", "propagation", "turn"} <= set(item)
