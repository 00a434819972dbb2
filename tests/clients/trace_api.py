"""What a client sent, compared span by span with what llmrum's read API answers
after stitching (and with the stored row for what the API does not show: kind,
status, events, exact nanoseconds)."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from rest_framework.authtoken.models import Token

from rumserver.applications import CreatedApplication, application_grant
from rumserver.models import Span
from tests.integration.conftest import http


def api_token(app: CreatedApplication) -> str:
    """A DRF token of a user who is a member of the application (and no other)."""
    username = f"reader-{app.application.slug}"
    User.objects.create_user(username)
    application_grant(slug=app.application.slug, username=username)
    return Token.objects.create(user=User.objects.get(username=username)).key


def read_stitched_trace(base_url: str, token: str, trace_id: str) -> dict[str, Any]:
    call_command("stitch", "--finalize-all", stdout=io.StringIO())
    status, _, body = http(
        "GET", f"{base_url}/api/v1/traces/{trace_id}", headers={"Authorization": f"Token {token}"}
    )
    assert status == 200, body[:500]
    return json.loads(body)


def assert_spans_arrived(
    answer: dict[str, Any],
    sent: list[dict[str, Any]],
    *,
    service: str,
    role: str,
    added_attributes: dict[str, Any] | None = None,
) -> None:
    """Every span the client recorded is in the answer, intact; nothing else is.

    ``sent`` holds the client's own record of each span: trace_id, span_id,
    parent_span_id, name, kind and status code (OTLP's numbers), status message, start_ns,
    end_ns, attributes, events."""
    by_id = {span["span_id"]: span for span in answer["spans"]}
    assert sorted(by_id) == sorted(span["span_id"] for span in sent)
    rows = {row.span_id: row for row in Span.objects.filter(trace_id=answer["trace_id"])}
    for span in sent:
        got, row, name = by_id[span["span_id"]], rows[span["span_id"]], span["name"]
        assert span["trace_id"] == answer["trace_id"] == row.trace_id, name
        assert got["parent_span_id"] == span["parent_span_id"], name
        assert (got["name"], got["service"], got["role"]) == (name, service, role), name
        assert got["start_ms"] == pytest.approx(int(span["start_ns"]) / 1e6, abs=1e-3), name
        assert got["end_ms"] == pytest.approx(int(span["end_ns"]) / 1e6, abs=1e-3), name
        assert got["attributes"] == {**span["attributes"], **(added_attributes or {})}, name
        assert (row.start_ns, row.end_ns) == (int(span["start_ns"]), int(span["end_ns"])), name
        assert row.kind == span["kind"], name
        status = span["status"]
        assert (row.status_code, row.status_message) == (status["code"], status["message"]), name
        stored_events = [
            {"name": e["name"], "time_ns": e["time_ns"], "attributes": e["attributes"]}
            for e in row.events
        ]
        sent_events = [{**e, "time_ns": int(e["time_ns"])} for e in span["events"]]
        assert stored_events == sent_events, name
