"""The read API: /api/v1/traces and /api/v1/traces/<trace_id> (DESIGN.md §7)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import Client
from rest_framework.authtoken.models import Token

from rumserver.models import BrowserSession
from rumserver.nul_guard import MESSAGE as NUL_MESSAGE
from tests.correlator.golden import send_score

pytestmark = pytest.mark.django_db


def as_user(user: User) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_a_trace_reads_back_with_spans_and_turn(world):
    golden = world["goldens"][0]
    r = as_user(world["alice"]).get(f"/api/v1/traces/{golden.trace_id}")
    assert r.status_code == 200
    body = r.json()
    assert set(body) == {
        "trace_id", "app", "state", "linked", "clock_skew_ms", "clock_skew_uncertainty_ms",
        "clock_skew_source", "spans", "turn", "scores",
    }  # fmt: skip
    assert body["scores"] == []
    assert (body["trace_id"], body["app"], body["state"], body["linked"]) == (
        golden.trace_id, world["chat"].application.slug, "open", True)  # fmt: skip
    assert body["clock_skew_ms"] == pytest.approx(10.0, abs=0.01)  # epoch-ms doubles
    # The golden echo: sent at 0 ms, headers back at 300 ms on the browser's clock; the
    # helper saw the request at 40 ms and answered at 280 ms on the server's (+10 ms).
    assert body["clock_skew_source"] == "server_timing"
    assert body["clock_skew_uncertainty_ms"] == pytest.approx(30.0, abs=0.01)
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


def test_a_turn_no_span_or_stream_named_a_model_answers_model_null(world):
    from correlator.models import Turn

    golden = world["goldens"][0]
    client = as_user(world["alice"])
    named = client.get(f"/api/v1/traces/{golden.trace_id}").json()["turn"]["model"]
    assert isinstance(named, str) and named
    Turn.objects.filter(trace__trace_id=golden.trace_id).update(model="")
    assert client.get(f"/api/v1/traces/{golden.trace_id}").json()["turn"]["model"] is None


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


def ids(answer) -> list[str]:
    assert answer.status_code == 200, answer.content
    return [t["trace_id"] for t in answer.json()["results"]]


def iso(epoch_ms: float) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).isoformat()


def test_the_list_is_newest_first_and_filters(world):
    c = as_user(world["alice"])
    g = [golden.trace_id for golden in world["goldens"]]
    assert ids(c.get("/api/v1/traces")) == [g[2], g[1], g[0]]
    assert ids(c.get("/api/v1/traces?outcome=stopped")) == [g[1]]
    assert ids(c.get("/api/v1/traces?outcome=error")) == []
    assert ids(c.get("/api/v1/traces?model=meta-llama/Llama-3.1-8B")) == [g[2], g[1], g[0]]
    assert ids(c.get("/api/v1/traces?model=meta-llama")) == []  # exact, not a prefix
    assert ids(c.get("/api/v1/traces?min_client_ttft_ms=600")) == [g[2], g[1], g[0]]
    assert ids(c.get("/api/v1/traces?min_client_ttft_ms=700")) == []


def test_the_list_filters_by_application(world):
    chat, other = world["chat"].application.slug, world["other"].application.slug
    g = [golden.trace_id for golden in world["goldens"]]
    alice = as_user(world["alice"])
    assert ids(alice.get(f"/api/v1/traces?app={chat}")) == [g[2], g[1], g[0]]
    assert ids(alice.get(f"/api/v1/traces?app={chat}&outcome=completed")) == [g[2], g[0]]
    staff = as_user(User.objects.create_user("root", is_staff=True))
    assert ids(staff.get(f"/api/v1/traces?app={other}")) == [g[3]]
    assert ids(staff.get(f"/api/v1/traces?app={chat}")) == [g[2], g[1], g[0]]


@pytest.mark.parametrize("slug", ["other", "no-such-app"])
def test_an_application_the_user_may_not_see_is_not_found(world, slug):
    """Like /api/v1/metrics and the report pages: a 404 that does not tell whether
    another team's application exists."""
    slug = world["other"].application.slug if slug == "other" else slug
    r = as_user(world["alice"]).get(f"/api/v1/traces?app={slug}")
    assert r.status_code == 404
    assert r.json() == {"detail": "no such application among yours"}


def test_the_list_filters_by_time(world):
    c = as_user(world["alice"])
    goldens = world["goldens"]
    g = [golden.trace_id for golden in goldens]
    # Traces start at their skew-corrected send time, t0 + 10 ms here.
    since, until = iso(goldens[1].t0 - 500), iso(goldens[2].t0 - 500)
    assert ids(c.get("/api/v1/traces", {"since": since})) == [g[2], g[1]]
    assert ids(c.get("/api/v1/traces", {"until": until})) == [g[1], g[0]]
    assert ids(c.get("/api/v1/traces", {"since": since, "until": until})) == [g[1]]
    naive = datetime.fromtimestamp((goldens[1].t0 - 500) / 1000, UTC).replace(tzinfo=None)
    assert ids(c.get("/api/v1/traces", {"since": naive.isoformat()})) == [g[2], g[1]]  # UTC
    assert ids(c.get("/api/v1/traces", {"since": iso(goldens[2].t0 + 500)})) == []


@pytest.mark.parametrize(
    "query, field, message",
    [
        ({"app": "not a slug!"}, "app", "Enter a valid"),
        ({"outcome": "exploded"}, "outcome", '"exploded" is not a valid choice.'),
        ({"model": "m" * 129}, "model", "no more than 128 characters"),
        ({"min_client_ttft_ms": "fast"}, "min_client_ttft_ms", "A valid number is required."),
        ({"min_client_ttft_ms": "nan"}, "min_client_ttft_ms", "A valid number is required."),
        ({"min_client_ttft_ms": "inf"}, "min_client_ttft_ms", "A valid number is required."),
        ({"min_client_ttft_ms": "-1"}, "min_client_ttft_ms", "greater than or equal to 0"),
        ({"since": "yesterday"}, "since", "Datetime has wrong format."),
        ({"until": "2026-13-01T00:00:00Z"}, "until", "Datetime has wrong format."),
        ({"since": "9999-12-31T23:59:59-23:59"}, "since", "out of range"),
        ({"since": "1969-12-31T23:59:59Z"}, "since", "must be from 1970-01-01T00:00:00+00:00"),
        ({"until": "2100-01-01T00:00:00Z"}, "until", "to before 2100-01-01T00:00:00+00:00"),
        (
            {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "since",
            "must be before until",
        ),
        (
            {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"},
            "since",
            "must be before until",
        ),
        ({"device": "toaster"}, "device", '"toaster" is not a valid choice.'),
        ({"attr": "no-colon"}, "attr", "must be key:value"),
        ({"attr": ":value"}, "attr", "must be key:value"),
        ({"q": "q" * 129}, "q", "no more than 128 characters"),
        ({"score": "s" * 65}, "score", "no more than 64 characters"),
        ({"browser": "b" * 65}, "browser", "no more than 64 characters"),
        ({"page_size": "0"}, "page_size", "greater than or equal to 1"),
        ({"page_size": "501"}, "page_size", "less than or equal to 500"),
        ({"page_size": "many"}, "page_size", "A valid integer is required."),
        ({"cursor": "not-base64!"}, "cursor", "invalid cursor"),
        # A well-formed cursor whose position is not a number reached the database.
        ({"cursor": base64.b64encode(b"p=abc").decode()}, "cursor", "invalid cursor"),
        ({"cursor": base64.b64encode(b"p=nan").decode()}, "cursor", "invalid cursor"),
    ],
)
def test_a_bad_filter_is_a_400_that_names_it(world, query, field, message):
    r = as_user(world["alice"]).get("/api/v1/traces", query)
    assert_names_the_parameter(r, field, message)


def assert_names_the_parameter(r, field: str, message: str) -> None:
    """A 400 whose body names only this parameter, with one message saying why."""
    assert r.status_code == 400, r.content
    body = r.json()
    assert list(body) == [field]
    (text,) = body[field]
    assert message in text


def test_an_empty_parameter_is_left_out(world):
    """As DRF reads forms (and the schema says with allowEmptyValue)."""
    c = as_user(world["alice"])
    every = ids(c.get("/api/v1/traces"))
    empty = {name: "" for name in ("app", "q", "outcome", "model", "browser", "os", "device",
                                   "min_client_ttft_ms", "score", "attr", "since", "until",
                                   "page_size", "cursor")}  # fmt: skip
    assert ids(c.get("/api/v1/traces", empty)) == every


def test_a_nul_in_a_filter_is_a_400_before_any_query(world):
    r = as_user(world["alice"]).get("/api/v1/traces", {"model": "a\x00b"})
    assert r.status_code == 400
    assert r["Content-Type"] == "text/plain"
    assert r.content.decode() == NUL_MESSAGE


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
    components = schema["components"]["schemas"]
    listing = schema["paths"]["/api/v1/traces"]["get"]
    # The list answers {next, previous, results}, not an array (issue 11).
    ok = listing["responses"]["200"]["content"]["application/json"]["schema"]
    page = components[ok["$ref"].rsplit("/", 1)[-1]]
    assert page["type"] == "object"
    assert set(page["required"]) == set(page["properties"]) == {"next", "previous", "results"}
    assert page["properties"]["results"]["type"] == "array"
    parameters = {p["name"] for p in listing["parameters"]}
    assert parameters == {"app", "q", "outcome", "model", "browser", "os", "device",
                          "min_client_ttft_ms", "score", "attr", "since", "until",
                          "cursor", "page_size"}  # fmt: skip
    detail = schema["paths"]["/api/v1/traces/{trace_id}"]["get"]["responses"]["200"]
    trace = components[detail["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    score = components[trace["properties"]["scores"]["items"]["$ref"].rsplit("/", 1)[-1]]
    assert set(score["properties"]) == {"name", "value", "comment", "created"}
    for path in ("/api/v1/traces", "/api/v1/traces/{trace_id}", "/api/v1/metrics"):
        responses = schema["paths"][path]["get"]["responses"]
        assert set(responses) == {"200", "400", "401", "404", "406"}, path
        assert set(responses["400"]["content"]) == {"application/json", "text/plain"}
        assert "WWW-Authenticate" in responses["401"]["headers"]


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
    assert {"app", "since", "until", "turns", "client_ttft_ms", "rates", "groups",
            "percentiles", "percentiles_relative_error"} <= set(answer["properties"])  # fmt: skip


def test_list_items_add_start_end_and_health(world):
    item = as_user(world["alice"]).get("/api/v1/traces").json()["results"][0]
    assert {"start_ms", "end_ms", "span_count", "propagation", "turn"} <= set(item)


@pytest.mark.parametrize(
    "query, field, message",
    [
        # Year 1 less the default day was an OverflowError, year 9999 one in the
        # rollup plan; a window of ten thousand years took seconds.
        ({"until": "0001-01-01T00:00:00Z"}, "until", "must be from 1970-01-01"),
        ({"since": "9999-12-31T23:58:00Z"}, "since", "must be from 1970-01-01"),
        ({"since": "0001-01-01T00:00:00Z"}, "since", "must be from 1970-01-01"),
        ({"since": "2099-12-31T00:00:00Z"}, "since", "must be before until"),
        ({"group_by": "colour"}, "group_by", '"colour" is not a valid choice.'),
    ],
)
def test_a_bad_metrics_query_is_a_400_that_names_it(world, query, field, message):
    slug = world["chat"].application.slug
    r = as_user(world["alice"]).get("/api/v1/metrics", {"app": slug, **query})
    assert_names_the_parameter(r, field, message)


def test_metrics_name_the_application_when_there_are_several(world):
    staff = as_user(User.objects.create_user("root", is_staff=True))
    r = staff.get("/api/v1/metrics")
    assert r.status_code == 400
    assert r.json() == {"app": ["which application? (?app=<slug>)"]}
    r = staff.get("/api/v1/metrics", {"app": world["other"].application.slug})
    assert r.status_code == 200 and r.json()["turns"] == 1
    r = as_user(world["alice"]).get("/api/v1/metrics", {"app": world["other"].application.slug})
    assert (r.status_code, r.json()) == (404, {"detail": "no such application among yours"})


def post_score(world, trace_id: str, name: str, value: float, comment: str = "") -> None:
    send_score(world["chat"].ingest_token, trace_id, name, value, comment)


def test_a_trace_answers_with_its_scores_oldest_first(world):
    golden = world["goldens"][0]
    post_score(world, golden.trace_id, "hallucination", 0.25, "made up a citation")
    post_score(world, golden.trace_id, "relevance", 1)
    scores = as_user(world["alice"]).get(f"/api/v1/traces/{golden.trace_id}").json()["scores"]
    assert [{k: s[k] for k in ("name", "value", "comment")} for s in scores] == [
        {"name": "hallucination", "value": 0.25, "comment": "made up a citation"},
        {"name": "relevance", "value": 1.0, "comment": ""},
    ]
    assert all(set(s) == {"name", "value", "comment", "created"} for s in scores)
    assert datetime.fromisoformat(scores[0]["created"]) <= datetime.fromisoformat(
        scores[1]["created"]
    )


def test_the_list_searches_by_each_kind_of_id(world):
    c = as_user(world["alice"])
    g = [golden.trace_id for golden in world["goldens"]]
    BrowserSession.objects.filter(session_id__in=["s0", "s2"]).update(user_id="user-7")
    assert ids(c.get("/api/v1/traces", {"q": g[1]})) == [g[1]]  # a trace id
    assert ids(c.get("/api/v1/traces", {"q": g[1].upper()})) == [g[1]]
    assert ids(c.get("/api/v1/traces", {"q": "s1"})) == [g[1]]  # a session id
    assert ids(c.get("/api/v1/traces", {"q": "user-7"})) == [g[2], g[0]]  # a user id
    assert ids(c.get("/api/v1/traces", {"q": "conv-golden"})) == [g[2], g[1], g[0]]
    assert ids(c.get("/api/v1/traces", {"q": "conv-golden", "outcome": "stopped"})) == [g[1]]
    assert ids(c.get("/api/v1/traces", {"q": "nobody"})) == []
    # The other application's trace and session stay out of alice's answers.
    assert ids(c.get("/api/v1/traces", {"q": g[3]})) == []
    assert ids(c.get("/api/v1/traces", {"q": "s3"})) == []


def test_the_list_filters_by_the_sessions_browser_os_and_device(world):
    c = as_user(world["alice"])
    g = [golden.trace_id for golden in world["goldens"]]
    BrowserSession.objects.filter(session_id="s1").update(
        browser="Firefox", os="Linux", device_class="desktop"
    )
    assert ids(c.get("/api/v1/traces", {"browser": "Firefox"})) == [g[1]]
    assert ids(c.get("/api/v1/traces", {"os": "Linux"})) == [g[1]]
    assert ids(c.get("/api/v1/traces", {"device": "desktop"})) == [g[1]]
    assert ids(c.get("/api/v1/traces", {"device": "other"})) == [g[2], g[0]]
    assert ids(c.get("/api/v1/traces", {"browser": "Safari"})) == []


def test_the_list_filters_by_a_score_name(world):
    c = as_user(world["alice"])
    g = [golden.trace_id for golden in world["goldens"]]
    post_score(world, g[0], "hallucination", 0.9)
    post_score(world, g[2], "relevance", 0.1)
    assert ids(c.get("/api/v1/traces", {"score": "hallucination"})) == [g[0]]
    assert ids(c.get("/api/v1/traces", {"score": "relevance"})) == [g[2]]
    assert ids(c.get("/api/v1/traces", {"score": "toxicity"})) == []


def test_the_list_filters_by_a_span_attribute(world):
    c = as_user(world["alice"])
    g = [golden.trace_id for golden in world["goldens"]]
    every = [g[2], g[1], g[0]]
    assert ids(c.get("/api/v1/traces", {"attr": "gen_ai.request.model:llama-3.1-8b"})) == every
    # A number as the attribute holds it, and a value with a colon of its own.
    assert ids(c.get("/api/v1/traces", {"attr": "gen_ai.usage.input_tokens:812"})) == every
    assert ids(c.get("/api/v1/traces", {"attr": "gen_ai.usage.input_tokens:813"})) == []
    assert ids(c.get("/api/v1/traces", {"attr": "gen_ai.request.model:llama:3"})) == []
    assert ids(c.get("/api/v1/traces", {"attr": "no.such.key:x"})) == []
