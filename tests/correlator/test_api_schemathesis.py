"""schemathesis against ``/api/schema/``: every operation of the read API that takes a
DRF token answers only what the schema says (status code, content type, body,
headers) and never a server error, with stitched traces present (issue 11).

In-process through the Django WSGI application, inside the test's transaction, so
the data the fixtures stitched is what the API reads. Each operation is fuzzed with
a bounded number of generated examples (valid and invalid) plus schemathesis's
boundary cases; the detail and list operations are also called with the real ids
and filter values of the stitched traces, which generated data never guesses.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import schemathesis
import werkzeug
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.utils import timezone
from rest_framework.authtoken.models import Token
from schemathesis import checks as core_checks
from schemathesis.specs.openapi import checks

from correlator.stitch.sweep import sweep_run
from tests.correlator.golden import GoldenTurn, send_otlp

pytestmark = pytest.mark.django_db

TOKEN_SCHEME = "tokenAuth"
CHECKS = [
    core_checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
    checks.ignored_auth,
]
EXAMPLES_PER_OPERATION = 200


@pytest.fixture
def token(world: dict[str, Any], client: Any) -> str:
    """alice's token, with more kinds of trace than ``world`` has: final ones, and an
    open one with no browser span (so no turn: the gateway's spans alone)."""
    sweep_run(now=timezone.now(), finalize_all=True)
    server_only = GoldenTurn(t0=time.time() * 1000 - 30_000)
    send_otlp(client, world["chat"].ingest_token, server_only.gateway_request())
    sweep_run(now=timezone.now())
    world["server_only"] = server_only
    return Token.objects.create(user=world["alice"]).key


def read_api(context: Any) -> bool:
    """The operations under /api/v1/ that take a DRF token."""
    operation = context.operation
    security = operation.definition.raw.get("security", [])
    return operation.path.startswith("/api/v1/") and any(
        TOKEN_SCHEME in requirement for requirement in security
    )


@pytest.fixture
def keep_the_test_connection() -> Iterator[None]:
    """Django's WSGI handler closes "old" connections as a request starts and ends, and
    the one holding the test's transaction looks old (autocommit off). Django's test
    client unhooks the same two signals around each request."""
    for signal in (request_started, request_finished):
        signal.disconnect(close_old_connections)
    yield
    for signal in (request_started, request_finished):
        signal.connect(close_old_connections)


def closed(document: dict[str, Any]) -> dict[str, Any]:
    """The schema with every object of named fields closed to others (no
    additionalProperties), so that an answer carrying a field the schema does not
    name breaks it too: the schema must say exactly what the API answers."""
    for component in document["components"]["schemas"].values():
        if "properties" in component:
            component.setdefault("additionalProperties", False)
    return document


@pytest.fixture
def api_schema(token: str, keep_the_test_connection: None) -> schemathesis.BaseSchema:
    app = get_wsgi_application()
    served = werkzeug.Client(app).get(
        "/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    )
    assert served.status_code == 200, served.text
    config = schemathesis.Config.from_dict(
        {
            "headers": {"Authorization": f"Token {token}"},
            # No example database to keep between runs: a failure prints its seed.
            "generation": {"max-examples": EXAMPLES_PER_OPERATION, "database": "none"},
        }
    )
    schema = schemathesis.openapi.from_dict(closed(served.json), config=config)
    schema.app = app  # requests go in-process to the WSGI application
    return schema.include(read_api)


# The filter again: parametrize applies the lazy schema's own, not the fixture's.
lazy_schema = schemathesis.pytest.from_fixture("api_schema").include(read_api)


@lazy_schema.parametrize()
def test_the_read_api_answers_as_its_schema_says(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)


def test_the_schema_lists_every_read_operation(api_schema: schemathesis.BaseSchema) -> None:
    operations = {op.ok().label for op in api_schema.get_all_operations()}
    assert operations == {
        "GET /api/v1/traces",
        "GET /api/v1/traces/{trace_id}",
        "GET /api/v1/metrics",
        "GET /api/v1/model-servers",
        "GET /api/v1/alert-rules",
        "POST /api/v1/alert-rules",
    }


def test_real_ids_and_filter_values_answer_as_the_schema_says(
    api_schema: schemathesis.BaseSchema, world: dict[str, Any], token: str
) -> None:
    def call(operation: Any, **parts: Any) -> Any:
        case = operation.Case(**parts)
        return case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS)

    detail = api_schema["/api/v1/traces/{trace_id}"]["GET"]
    listing = api_schema["/api/v1/traces"]["GET"]
    chat, other = world["chat"].application.slug, world["other"].application.slug
    statuses = {}
    for golden in [*world["goldens"], world["server_only"]]:
        for trace_id, query in [
            (golden.trace_id, {}),
            (golden.trace_id.upper(), {}),
            (golden.trace_id, {"app": chat}),
        ]:
            answer = call(detail, path_parameters={"trace_id": trace_id}, query=query)
            statuses.setdefault(golden.trace_id, set()).add(answer.status_code)
    *visible, foreign = world["goldens"]
    assert statuses == {
        **{golden.trace_id: {200} for golden in visible},
        foreign.trace_id: {404},  # the other application's
        world["server_only"].trace_id: {200},
    }

    queries = [
        {},
        {"app": chat},
        {"app": other},
        {"outcome": "stopped"},
        {"model": "meta-llama/Llama-3.1-8B"},
        {"min_client_ttft_ms": 600},
        {"page_size": 1},
    ]
    answers = [call(listing, query=query) for query in queries]
    assert [answer.status_code for answer in answers] == [200, 200, 404, 200, 200, 200, 200]

    # Every page by its cursor, forwards and back.
    pages, query = 0, {"page_size": 1}
    while True:
        page = call(listing, query=query).json()
        pages += 1
        if page["next"] is None:
            break
        query = {"page_size": 1, "cursor": parse_qs(urlparse(page["next"]).query)["cursor"][0]}
    assert pages == 4
    back = parse_qs(urlparse(page["previous"]).query)["cursor"][0]
    assert len(call(listing, query={"page_size": 1, "cursor": back}).json()["results"]) == 1
