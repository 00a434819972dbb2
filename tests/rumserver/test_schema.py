"""The published JSON Schema and the server's compiled validator agree."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import msgspec
import pytest

from rumserver.ingest.beacon.parse import parse_batch
from rumserver.ingest.beacon.schema import json_schema
from rumserver.ingest.errors import IngestError
from tests import factories

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "rumserver" / "schemas" / "beacon.v1.json"


def test_the_published_schema_is_what_the_server_validates():
    published = json.loads(SCHEMA_FILE.read_text())
    assert published == json.loads(json.dumps(json_schema())), (
        "rumserver/schemas/beacon.v1.json is stale: regenerate it with "
        "`python -m rumserver.ingest.beacon.schema > rumserver/schemas/beacon.v1.json`"
    )


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def server_accepts(body: dict) -> bool:
    try:
        parsed = parse_batch(factories.encode(body), max_events=200)
    except IngestError:
        return False
    return not parsed.rejected


SAMPLES = {
    "turn and action": (factories.batch([factories.turn_event(), factories.action_event()]), True),
    "every event type": (
        factories.batch(
            [
                factories.turn_event(regenerate_of=factories.span_id(), outcome="stopped"),
                factories.action_event("regenerate", attrs={"k": "v", "n": 1, "b": True}),
                {"type": "feedback", "id": "f1", "ts": factories.now_ms(), "value": "down"},
                {"type": "feedback", "id": "f2", "ts": factories.now_ms(), "value": 0.2},
                {
                    "type": "vital",
                    "id": "v1",
                    "ts": factories.now_ms(),
                    "name": "INP",
                    "value": 96,
                    "delta": 96,
                    "rating": "good",
                    "navigation_type": "navigate",
                },
                {
                    "type": "error",
                    "id": "x1",
                    "ts": factories.now_ms(),
                    "message": "boom",
                    "stack": "at f (app.js:1:2)",
                    "source": "app.js",
                    "lineno": 1,
                    "colno": 2,
                },
                {
                    "type": "page_view",
                    "id": "p1",
                    "ts": factories.now_ms(),
                    "url": "https://a/b",
                    "route_change": True,
                },
            ]
        ),
        True,
    ),  # fmt: skip
    "zero trace id": (factories.batch([factories.turn_event(trace_id="0" * 32)]), False),
    "uppercase span id": (
        factories.batch([factories.turn_event(span_id="B7AD6B7169203331")]),
        False,
    ),
    "negative gap": (factories.batch([factories.turn_event(tbt_gaps=[-1])]), False),
    "unknown type": (factories.batch([{"type": "x", "id": "a", "ts": factories.now_ms()}]), False),
    "ts in 1970": (factories.batch([factories.action_event(ts=1000)]), False),
    "bad outcome": (factories.batch([factories.turn_event(outcome="meh")]), False),
    "version 2": ({**factories.batch(), "v": 2}, False),
    "no session": ({k: v for k, v in factories.batch().items() if k != "session"}, False),
    "missing t_send": (
        factories.batch([{k: v for k, v in factories.turn_event().items() if k != "t_send"}]),
        False,
    ),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_schema_and_server_agree_on(name):
    body, valid = SAMPLES[name]
    assert validator().is_valid(body) is valid
    assert server_accepts(body) is valid


def test_the_schema_is_valid_draft_2020_12():
    validator()
    assert msgspec.json.decode(SCHEMA_FILE.read_bytes())["title"] == "llmrum beacon payload v1"
