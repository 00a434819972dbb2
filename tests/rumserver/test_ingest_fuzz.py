"""Fuzzing both ingest endpoints (and scores) with hostile bodies (DESIGN.md §10.1).

Thousands of seeded bodies (tests/rumserver/fuzz_bodies.py) go through Django's
WSGI request handler with the whole middleware stack, on the suite's database
(PostgreSQL in CI). For every body: never a 5xx, the answer is in the endpoint's
own format, and nothing is half-written: a 4xx stores nothing, a 2xx stores
exactly the events or spans it accepted.

LLMRUM_FUZZ_SEED picks other bodies (a failure names its seed and body number);
LLMRUM_FUZZ_BODIES sets how many bodies each endpoint gets.
"""

from __future__ import annotations

import io
import json
import logging
import os
import traceback
from collections.abc import Callable
from typing import Any

import pytest
from django.core.signals import got_request_exception
from django.db import connection
from django.test import override_settings
from django.test.client import ClientHandler
from google.rpc import status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import REGISTRY

from rumserver.models import BrowserEvent, BrowserSession, DirtyTrace, Score, Span
from tests import factories
from tests.rumserver.fuzz_bodies import Body, Generator

SEED = int(os.environ.get("LLMRUM_FUZZ_SEED", "20260101"))
# Per endpoint: beacon + OTLP/JSON + OTLP/protobuf + a third for scores make 10,000 on
# PostgreSQL (CI). CI runs tests/rumserver again on SQLite, for the portable write path:
# a third of them there.
ON_POSTGRES = os.environ.get("DATABASE_URL", "").startswith(("postgres", "pgsql"))
BODIES = int(os.environ.get("LLMRUM_FUZZ_BODIES", "3000" if ON_POSTGRES else "1000"))

pytestmark = [
    pytest.mark.django_db,
    # No rate limit may turn a body away before it is read (the limits are tested apart).
    pytest.mark.usefixtures("_no_rate_limits"),
]


@pytest.fixture
def _no_rate_limits():
    with override_settings(
        LLMRUM_BEACON_RATE_LIMIT=1e9, LLMRUM_BEACON_IP_RATE_LIMIT=1e9, LLMRUM_OTLP_RATE_LIMIT=1e9
    ):
        yield


@pytest.fixture(autouse=True)
def _quiet_4xx_log():
    """Django logs every 4xx as a warning: thousands of lines, and a third of the time."""
    logger = logging.getLogger("django.request")
    level = logger.level
    logger.setLevel(logging.ERROR)  # a 5xx is still logged
    yield
    logger.setLevel(level)


TABLES = [model._meta.db_table for model in (BrowserEvent, BrowserSession, DirtyTrace, Span, Score)]
_COUNT_SQL = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in TABLES)


def row_counts() -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(_COUNT_SQL)
        names = ("events", "sessions", "dirty", "spans", "scores")
        return dict(zip(names, cursor.fetchone(), strict=True))


def accepted_spans() -> float:
    value = REGISTRY.get_sample_value("llmrum_spans_total", {"outcome": "accepted", "reason": "ok"})
    return value or 0.0


class Poster:
    """Calls Django's request handler with a WSGI environ: the test client's path
    through every middleware, without its per-request bookkeeping."""

    def __init__(self) -> None:
        self.handler = ClientHandler(enforce_csrf_checks=False)
        self.crash = ""

    def on_exception(self, **kwargs: Any) -> None:
        self.crash = traceback.format_exc()  # named in the failure, like the test client does

    def post(self, path: str, query: str, body: Body, headers: dict[str, str]) -> Any:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SCRIPT_NAME": "",
            "SERVER_NAME": "testserver",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": body.content_type,
            "CONTENT_LENGTH": str(len(body.data)),
            "wsgi.input": io.BytesIO(body.data),
            "wsgi.url_scheme": "http",
            "wsgi.errors": io.StringIO(),
            "wsgi.multithread": False,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            **headers,
        }
        if body.gzip:
            environ["HTTP_CONTENT_ENCODING"] = "gzip"
        if body.chunked:
            del environ["CONTENT_LENGTH"]
            environ["HTTP_TRANSFER_ENCODING"] = "chunked"
            environ["wsgi.input_terminated"] = body.chunked == "server"
        self.crash = ""
        response = self.handler(environ)
        assert not self.crash, self.crash
        return response


@pytest.fixture
def poster() -> Any:
    poster = Poster()
    got_request_exception.connect(poster.on_exception)
    yield poster
    got_request_exception.disconnect(poster.on_exception)


def _run(bodies: int, make: Callable[[], Body], check: Callable[[Body, Any], None], name: str):
    for number in range(bodies):
        body = make()
        try:
            check(body, number)
        except AssertionError as error:
            raise AssertionError(
                f"{name} body #{number} (LLMRUM_FUZZ_SEED={SEED}, {body.note.strip()}): "
                f"{error}\nbody[:400] = {body.data[:400]!r}"
            ) from None


def test_the_beacon_endpoint_answers_every_body_with_a_4xx_or_what_it_stored(db, poster):
    app = factories.make_app()
    generator, seen = Generator(SEED), set()
    headers = {"HTTP_ORIGIN": factories.CHAT_ORIGIN, "HTTP_USER_AGENT": factories.CHROME_UA}
    query = f"key={app.application.public_key}"
    statuses: dict[int, int] = {}

    def check(body: Body, number: int) -> None:
        before = row_counts()
        r = poster.post("/rum/v1/beacon", query, body, headers)
        assert r.status_code in (202, 400, 413, 415), (r.status_code, r.content[:300])
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        after = row_counts()
        assert r["Content-Type"] == "application/json"
        answer = json.loads(r.content)
        added = {key: after[key] - before[key] for key in after}
        if r.status_code != 202:
            assert isinstance(answer.get("error"), str) and answer["error"]
            assert set(answer) <= {"error", "field"}
            assert isinstance(answer.get("field", ""), str)
            assert added == dict.fromkeys(added, 0), added
            return
        assert set(answer) == {"accepted", "rejected"}
        accepted, rejected = answer["accepted"], answer["rejected"]
        assert isinstance(accepted, int) and accepted >= 0
        for item in rejected:
            assert set(item) == {"index", "error"} and isinstance(item["index"], int)
            assert isinstance(item["error"], str) and item["error"]
        reused = bool(body.ids & seen)  # an id stored before lands once: fewer rows
        seen.update(body.ids)
        assert added["events"] == accepted or (reused and added["events"] < accepted), added
        assert (added["spans"], added["scores"]) == (0, 0)
        if not accepted:
            assert added == dict.fromkeys(added, 0), added
        else:
            assert added["sessions"] <= 1

    _run(BODIES, generator.beacon, check, "beacon")
    # The mix must reach both outcomes often, or the fuzz tests nothing.
    assert statuses.get(202, 0) > BODIES // 4 and statuses.get(400, 0) > BODIES // 10, statuses


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_the_otlp_endpoint_answers_every_body_with_a_4xx_or_what_it_stored(db, poster, encoding):
    app = factories.make_app()
    generator, seen = Generator(SEED + 1), set()
    headers = {"HTTP_AUTHORIZATION": f"Bearer {app.ingest_token}"}
    make = generator.otlp_json if encoding == "json" else generator.otlp_protobuf
    statuses: dict[int, int] = {}

    def check(body: Body, number: int) -> None:
        before, claimed_before = row_counts(), accepted_spans()
        r = poster.post("/v1/traces", "", body, headers)
        assert r.status_code in (200, 400, 413, 415), (r.status_code, r.content[:300])
        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
        after, claimed = row_counts(), accepted_spans() - claimed_before
        assert r["Content-Type"] == body.content_type
        added = {key: after[key] - before[key] for key in after}
        if r.status_code != 200:
            if body.content_type == "application/json":
                status = json.loads(r.content)
                assert set(status) == {"code", "message"} and status["code"] == 3
                assert isinstance(status["message"], str) and status["message"]
            else:
                status = status_pb2.Status.FromString(r.content)
                assert status.code == 3 and status.message
            assert added == dict.fromkeys(added, 0), added
            assert claimed == 0
            return
        if body.content_type == "application/json":
            answer = json.loads(r.content)
            assert set(answer) <= {"partialSuccess"}
            partial = answer.get("partialSuccess", {"rejectedSpans": "0", "errorMessage": ""})
            rejected, message = int(partial["rejectedSpans"]), partial["errorMessage"]
        else:
            partial = ExportTraceServiceResponse.FromString(r.content).partial_success
            rejected, message = partial.rejected_spans, partial.error_message
        assert (rejected > 0) == bool(message), (rejected, message)
        reused = bool(body.ids & seen)
        seen.update(body.ids)
        assert added["spans"] == claimed or (reused and added["spans"] < claimed), (added, claimed)
        assert (added["events"], added["sessions"], added["scores"]) == (0, 0, 0)
        if not claimed:
            assert added["dirty"] == 0

    _run(BODIES, make, check, f"otlp-{encoding}")
    assert statuses.get(200, 0) > BODIES // 4 and statuses.get(400, 0) > BODIES // 10, statuses


def test_the_scores_endpoint_answers_every_body_with_a_4xx_or_one_score(db, poster):
    app = factories.make_app()
    generator = Generator(SEED + 2)
    headers = {"HTTP_AUTHORIZATION": f"Bearer {app.ingest_token}"}

    def check(body: Body, number: int) -> None:
        before = row_counts()
        r = poster.post("/api/v1/scores", "", body, headers)
        assert r.status_code in (201, 400, 413), (r.status_code, r.content[:300])
        added = {key: n - before[key] for key, n in row_counts().items()}
        answer = json.loads(r.content)
        if r.status_code == 201:
            assert set(answer) == {"id", "trace_id", "name", "value"}
            assert (added["scores"], added["events"], added["spans"]) == (1, 0, 0)
        else:
            assert isinstance(answer["error"], str) and set(answer) <= {"error", "field"}
            assert added == dict.fromkeys(added, 0), added

    _run(BODIES // 3, generator.score, check, "scores")
