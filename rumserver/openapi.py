"""OpenAPI additions for the plain Django ingest views drf-spectacular cannot see.

``POST /api/v1/scores`` (DESIGN.md §7) is a plain view (it shares the ingest token,
error shape and body limits with the OTLP endpoint), so a postprocessing hook
describes it in the generated schema instead of turning it into a DRF view.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from rumserver.ingest.scores import RecordedScore, ScoreIn

SCORES_PATH = "/api/v1/scores"
INGEST_TOKEN_SCHEME = "ingestToken"


def _score_schemas() -> dict[str, Any]:
    """ScoreInput and Score from the structs POST /api/v1/scores decodes and answers."""
    _, components = msgspec.json.schema_components(
        [ScoreIn, RecordedScore], ref_template="#/components/schemas/{name}"
    )
    named = {"ScoreInput": components["ScoreIn"], "Score": components["RecordedScore"]}
    for schema in named.values():
        schema.pop("title", None)  # the struct's name, not the schema's
    return named


_INGEST_ERROR = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What is wrong, for a human."},
        "field": {"type": "string", "description": "The field at fault, when there is one."},
    },
    "required": ["error"],
}


def _error(
    description: str, headers: dict[str, Any] | None = None, *, or_text: bool = False
) -> dict[str, Any]:
    """An error answer in the ingest error shape; ``or_text``: or in plain text, which
    rumserver.nul_guard answers to a NUL in the URL before any view runs."""
    response: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/IngestError"}}},
    }
    if or_text:
        response["content"]["text/plain"] = {"schema": {"type": "string"}}
    if headers:
        response["headers"] = headers
    return response


_RETRY_AFTER = {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}}

_SCORES_POST = {
    "operationId": "scores_create",
    "summary": "Record an evaluation score for a trace",
    "description": (
        "Stores one score (hallucination, relevance, user-defined) for a trace of the "
        "application the ingest token belongs to; the trace's rates are recomputed. "
        "Bodies are at most 64 KiB of JSON."
    ),
    "tags": ["scores"],
    "security": [{INGEST_TOKEN_SCHEME: []}],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ScoreInput"}}},
    },
    "responses": {
        "201": {
            "description": "Stored.",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Score"}}},
        },
        "400": _error(
            "Invalid JSON, an invalid field (named in `field`), a malformed chunked or gzip "
            "body; in plain text, a NUL in the URL.",
            or_text=True,
        ),
        "401": _error(
            "Missing or unknown ingest token.",
            {"WWW-Authenticate": {"schema": {"type": "string"}}},
        ),
        "405": _error("Not POST."),
        "413": _error("Body over 64 KiB."),
        "415": _error("Content-Type is not application/json, or Content-Encoding not gzip."),
        "503": _error("Storage unavailable, retry later.", _RETRY_AFTER),
    },
}


def add_ingest_endpoints(
    result: dict[str, Any], generator: Any, request: Any, public: bool, **kwargs: Any
) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: add ``POST /api/v1/scores``."""
    components = result.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for name, schema in _score_schemas().items():
        schemas.setdefault(name, schema)
    schemas.setdefault("IngestError", copy.deepcopy(_INGEST_ERROR))
    components.setdefault("securitySchemes", {})[INGEST_TOKEN_SCHEME] = {
        "type": "http",
        "scheme": "bearer",
        "description": "An application's ingest token: `Authorization: Bearer it_...`.",
    }
    paths = result.setdefault("paths", {})
    paths.setdefault(SCORES_PATH, {})["post"] = copy.deepcopy(_SCORES_POST)
    result["paths"] = dict(sorted(paths.items()))
    return result
