"""POST /api/v1/scores: evaluation results stored against a trace."""

from __future__ import annotations

import json
import secrets

import pytest

from rumserver.models import DirtyTrace, Score
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture
def app():
    return factories.make_app()


def post(client, body, token, content_type="application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    return client.generic("POST", "/api/v1/scores", data, content_type=content_type, **headers)


def test_a_score_is_stored_and_its_trace_marked_dirty(client, app):
    trace_id = secrets.token_hex(16)
    r = post(client, {"trace_id": trace_id, "name": "hallucination", "value": 0.8,
                      "comment": "cited a paper that does not exist"}, app.ingest_token)  # fmt: skip
    assert r.status_code == 201
    body = r.json()
    assert (body["trace_id"], body["name"], body["value"]) == (trace_id, "hallucination", 0.8)
    score = Score.objects.get()
    assert (score.app_id, score.comment) == (
        app.application.pk,
        "cited a paper that does not exist",
    )
    assert DirtyTrace.objects.filter(trace_id=trace_id).exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"trace_id": "0" * 32, "name": "relevance", "value": 1}, "trace_id"),
        ({"trace_id": "abc", "name": "relevance", "value": 1}, "trace_id"),
        ({"trace_id": "a" * 32, "name": "", "value": 1}, "name"),
        ({"trace_id": "a" * 32, "name": "has space", "value": 1}, "name"),
        ({"trace_id": "a" * 32, "name": "relevance", "value": "high"}, "value"),
        ({"trace_id": "a" * 32, "name": "relevance", "value": 1, "extra": 1}, None),
        ({"trace_id": "a" * 32, "name": "relevance"}, None),
    ],
)
def test_an_invalid_score_is_400_naming_the_field(client, app, body, field):
    r = post(client, body, app.ingest_token)
    assert r.status_code == 400
    assert r.json()["error"].startswith("invalid score")
    if field:
        assert r.json()["field"] == field
    assert not Score.objects.exists() and not DirtyTrace.objects.exists()


def test_a_non_finite_value_is_400(client, app):
    body = b'{"trace_id": "' + b"a" * 32 + b'", "name": "x", "value": 1e999}'
    r = post(client, body, app.ingest_token)
    assert r.status_code == 400 and r.json()["field"] == "value"
    assert not Score.objects.exists()


def test_a_wrong_token_is_401_and_other_types_415(client, app):
    body = {"trace_id": "a" * 32, "name": "relevance", "value": 1}
    r = post(client, body, "it_nope")
    assert r.status_code == 401 and r["WWW-Authenticate"].startswith("Bearer")
    assert post(client, body, None).status_code == 401
    assert post(client, body, app.ingest_token, content_type="text/plain").status_code == 415
    assert post(client, b"{" * 70_000, app.ingest_token).status_code == 413
    assert not Score.objects.exists()
