"""POST /rum/v1/beacon: every answer of DESIGN.md §4, and that a refused
request leaves nothing behind."""

from __future__ import annotations

import json
import math
import zlib

import pytest
from django.db import connection
from django.test import override_settings

from rumserver.models import Application, BrowserEvent, BrowserSession, DirtyTrace
from tests import factories
from tests.conftest import BeaconClient
from tests.factories import batch, turn_event


def stored() -> tuple[int, int, int]:
    return (
        BrowserEvent.objects.count(),
        BrowserSession.objects.count(),
        DirtyTrace.objects.count(),
    )


def assert_nothing_written() -> None:
    assert stored() == (0, 0, 0)


# --- 202: accepted ------------------------------------------------------------


def test_it_stores_a_batch_with_session_events_and_dirty_traces(beacon):
    turn = turn_event()
    stop = factories.action_event("stop", turn_span_id=turn["span_id"])
    r = beacon.post(batch([turn, stop]))

    assert r.status_code == 202
    assert r.json() == {"accepted": 2, "rejected": []}
    session = BrowserSession.objects.get()
    assert session.session_id == "sess-alice"
    assert session.user_id == "user-alice"
    assert (session.browser, session.os, session.device_class, session.is_bot) == (
        "Chrome",
        "Windows",
        "desktop",
        False,
    )
    assert session.client_ip is None  # not stored unless the operator opts in
    row = BrowserEvent.objects.get(type="turn")
    assert (row.trace_id, row.span_id, row.session_id) == (
        turn["trace_id"],
        turn["span_id"],
        session.pk,
    )
    assert row.data["t_first_token"] == turn["t_first_token"]
    assert row.data["tbt_summary"] == turn["tbt_summary"]
    assert row.data["page_url"] == "https://chat.example.com/c/1"
    assert row.received_at is not None and row.sent_at_ms > 0
    action = BrowserEvent.objects.get(type="action")
    assert (action.name, action.turn_span_id) == ("stop", turn["span_id"])
    assert list(DirtyTrace.objects.values_list("trace_id", flat=True)) == [turn["trace_id"]]


def test_it_accepts_application_json_and_text_plain(beacon):
    r1 = beacon.post(batch(), content_type="application/json")
    r2 = beacon.post(batch(), content_type="text/plain")
    assert (r1.status_code, r2.status_code) == (202, 202)
    assert BrowserEvent.objects.count() == 2


def test_it_accepts_gzip_bodies(beacon):
    r = beacon.post(factories.gzipped(factories.encode(batch())), HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 202, r.content
    assert BrowserEvent.objects.count() == 1


def test_it_parses_the_user_agent_into_device_class_and_flags_bots(beacon):
    beacon.post(batch(session={"id": "phone"}), user_agent=factories.IPHONE_UA)
    beacon.post(batch(session={"id": "crawler"}), user_agent=factories.GOOGLEBOT_UA)
    phone = BrowserSession.objects.get(session_id="phone")
    crawler = BrowserSession.objects.get(session_id="crawler")
    assert (phone.device_class, phone.os, phone.is_bot) == ("mobile", "iOS", False)
    # Bots are flagged, never dropped.
    assert (crawler.device_class, crawler.is_bot) == ("bot", True)
    assert BrowserEvent.objects.filter(session=crawler).count() == 1


def test_it_stores_a_duplicate_batch_once(beacon):
    body = batch([turn_event(), turn_event(), factories.action_event()])
    first = beacon.post(body)
    before = stored()
    second = beacon.post(body)
    assert (first.status_code, second.status_code) == (202, 202)
    assert second.json()["accepted"] == 3
    assert stored() == before == (3, 1, 2)


def test_it_stores_a_duplicate_event_id_within_a_batch_once(beacon):
    event = turn_event()
    r = beacon.post(batch([event, dict(event)]))
    assert r.status_code == 202
    assert BrowserEvent.objects.count() == 1


def test_it_updates_a_web_vital_reported_again_under_the_same_metric_id(beacon):
    vital = {"type": "vital", "id": "v4-cls-1", "ts": factories.now_ms(), "name": "CLS"}
    beacon.post(batch([{**vital, "value": 0.05, "delta": 0.05}]))
    beacon.post(batch([{**vital, "value": 0.12, "delta": 0.07}]))
    row = BrowserEvent.objects.get()
    assert (row.data["value"], row.data["delta"]) == (0.12, 0.07)


def test_a_reused_id_never_overwrites_a_turn_with_a_vital(beacon):
    turn = turn_event(id="same-id")
    beacon.post(batch([turn]))
    beacon.post(
        batch([{"type": "vital", "id": "same-id", "ts": turn["ts"], "name": "LCP", "value": 1}])
    )
    assert BrowserEvent.objects.get().type == "turn"


def test_it_keeps_the_user_id_when_a_later_batch_has_none(beacon):
    beacon.post(batch())
    beacon.post(batch(user=None))
    assert BrowserSession.objects.get().user_id == "user-alice"


def test_it_takes_200_events_in_one_batch(beacon):
    r = beacon.post(batch([factories.action_event() for _ in range(200)]))
    assert r.status_code == 202
    assert r.json()["accepted"] == 200
    assert BrowserEvent.objects.count() == 200


def test_it_answers_202_with_no_rows_for_an_empty_batch(beacon):
    r = beacon.post(batch([]))
    assert r.status_code == 202
    assert r.json() == {"accepted": 0, "rejected": []}
    assert_nothing_written()


# --- 202 with per-event rejections -----------------------------------------------

BAD_EVENTS = [
    ("all-zero trace id", {"trace_id": "0" * 32}, "trace_id"),
    ("short trace id", {"trace_id": "abc123"}, "trace_id"),
    ("long trace id", {"trace_id": "a" * 33}, "trace_id"),
    ("non-hex trace id", {"trace_id": "z" * 32}, "trace_id"),
    ("uppercase trace id", {"trace_id": "0AF7651916CD43DD8448EB211C80319C"}, "trace_id"),
    ("trace id with newline", {"trace_id": "0af7651916cd43dd8448eb211c80319c\n"}, "trace_id"),
    ("all-zero span id", {"span_id": "0" * 16}, "span_id"),
    ("span id wrong length", {"span_id": "b7ad6b71692033"}, "span_id"),
    ("negative time", {"t_send": -1}, "t_send"),
    ("huge time", {"t_first_token": 1e300}, "t_first_token"),
    ("out of range float", {"ts": "<raw:1e400>"}, "ts"),
    ("huge integer", {"chunks": 2**70}, "chunks"),
    ("negative count", {"output_tokens": -3}, "output_tokens"),
    ("negative gap", {"tbt_gaps": [10, -5]}, "tbt_gaps"),
    ("string for a number", {"t_send": "1700000000000"}, "t_send"),
    ("unknown outcome", {"outcome": "exploded"}, "outcome"),
    ("id with spaces", {"id": "has spaces"}, "id"),
    ("missing id", {"id": None}, "id"),
    ("nested map in usage", {"usage": {"input_tokens": {"a": 1}}}, "usage"),
]


@pytest.mark.parametrize(("label", "change", "field"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_one_bad_event_is_rejected_alone(beacon, label, change, field):
    good = turn_event()
    bad = turn_event(**change)
    if change.get("id", "") is None:
        del bad["id"]
    wire = factories.encode(batch([good, bad, factories.action_event()]))
    wire = wire.replace(b'"<raw:1e400>"', b"1e400")  # a JSON number no float can hold
    r = beacon.post(wire)
    assert r.status_code == 202, r.content
    body = r.json()
    assert body["accepted"] == 2
    assert len(body["rejected"]) == 1
    assert body["rejected"][0]["index"] == 1
    assert field in body["rejected"][0]["error"]
    assert set(BrowserEvent.objects.values_list("type", flat=True)) == {"turn", "action"}
    assert BrowserEvent.objects.filter(trace_id=good["trace_id"]).count() == 1
    assert DirtyTrace.objects.count() == 1


# --- 202: a turn whose times cannot be true is rejected alone (time_order) --------------

T0 = 1_767_225_600_000.0  # a fixed send time keeps the messages exact


def _timed_turn(**times: float | None) -> dict:
    base = {"t_send": T0, "t_headers": T0 + 100, "t_first_token": T0 + 300,
            "t_last_token": T0 + 2000, "t_end": T0 + 2010, "ts": T0 + 2010}  # fmt: skip
    event = turn_event(**{**base, **times})
    return {key: value for key, value in event.items() if value is not None}


TIME_ORDER = [
    ("first token 5 s before send", {"t_headers": None, "t_first_token": T0 - 5000},
     "time_order: t_first_token is 5000.0 ms before t_send"),
    ("headers after the first token", {"t_headers": T0 + 400},
     "time_order: t_first_token is 100.0 ms before t_headers"),
    ("end before the last token", {"t_end": T0 + 1000},
     "time_order: t_end is 1000.0 ms before t_last_token"),
    ("order held over a missing field", {"t_headers": T0 + 500, "t_first_token": None},
     "time_order: t_last_token is"),  # 2000 > 500: fine; see the next case
    ("1.5 ms is past the tolerance", {"t_headers": T0 - 1.5},
     "time_order: t_headers is 1.5 ms before t_send"),
    ("a turn of one hour", {"t_end": T0 + 3_600_000},
     "time_order: t_end is 3600000 ms after t_send (over one hour)"),
    ("a gap of one hour", {"tbt_gaps": [20.0, 3_600_000.0]},
     "time_order: a gap between tokens (tbt_gaps or tbt_summary) is over one hour"),
    ("a summary max of two hours", {"tbt_summary": {"count": 3, "max": 7_200_000.0}},
     "time_order: a gap between tokens"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "times", "error"),
    [case for case in TIME_ORDER if case[0] != "order held over a missing field"],
    ids=[case[0] for case in TIME_ORDER if case[0] != "order held over a missing field"],
)
def test_a_turn_out_of_time_order_is_rejected_alone(beacon, label, times, error):
    good, bad = _timed_turn(), _timed_turn(**times)
    r = beacon.post(batch([good, bad, factories.action_event()]))
    assert r.status_code == 202, r.content
    assert r.json()["accepted"] == 2
    [rejected] = r.json()["rejected"]
    assert rejected["index"] == 1 and rejected["error"].startswith(error), rejected
    assert list(BrowserEvent.objects.filter(type="turn").values_list("span_id", flat=True)) == [
        good["span_id"]
    ]
    assert BrowserEvent.objects.count() == 2
    assert list(DirtyTrace.objects.values_list("trace_id", flat=True)) == [good["trace_id"]]


def test_a_batch_of_only_turns_out_of_order_writes_nothing(beacon):
    r = beacon.post(batch([_timed_turn(t_headers=None, t_first_token=T0 - 5000)]))
    assert r.status_code == 202
    assert r.json() == {
        "accepted": 0,
        "rejected": [{"index": 0, "error": "time_order: t_first_token is 5000.0 ms before t_send"}],
    }
    assert_nothing_written()


@pytest.mark.parametrize(
    "times",
    [
        {"t_headers": None, "t_first_token": None},  # only some times: their order holds
        {"t_headers": T0 + 500, "t_first_token": None, "t_last_token": T0 + 600},
        {"t_end": T0 + 3_599_999},  # just under an hour
        {"t_headers": T0, "t_first_token": T0, "t_last_token": T0, "t_end": T0},  # all equal
    ],
    ids=["some missing", "order over a gap", "under an hour", "all equal"],
)
def test_turns_in_time_order_are_accepted_as_sent(beacon, times):
    turn = _timed_turn(**times)
    r = beacon.post(batch([turn]))
    assert r.json() == {"accepted": 1, "rejected": []}
    stored = BrowserEvent.objects.get().data
    for name in ("t_send", "t_headers", "t_first_token", "t_last_token", "t_end"):
        assert stored.get(name) == turn.get(name)


def test_sub_millisecond_jitter_is_accepted_and_no_duration_is_negative(beacon):
    """performance.now() + timeOrigin rounding can put a time a fraction of a ms before
    its predecessor: inside the tolerance it is raised to it, so TTFT is 0, not -0.6."""
    turn = _timed_turn(t_headers=T0 - 0.6, t_first_token=T0 - 0.2, t_end=T0 + 1999.5)
    r = beacon.post(batch([turn]))
    assert r.json() == {"accepted": 1, "rejected": []}
    data = BrowserEvent.objects.get().data
    assert (data["t_send"], data["t_headers"], data["t_first_token"]) == (T0, T0, T0)
    assert (data["t_last_token"], data["t_end"]) == (T0 + 2000, T0 + 2000)


# --- 202 or 400: lone surrogates, wrong types at any depth -----------------------------


def _with_raw(event: dict, raw: bytes) -> bytes:
    """An event with a raw member spliced in (JSON that json.dumps would not write)."""
    return factories.encode(event)[:-1] + b", " + raw + b"}"


@pytest.mark.parametrize(
    "raw",
    [b'"model": "gpt\\ud83d"', b'"\\udc00": 1', b'"usage": {"\\ud800x": 3}'],
    ids=["in a value", "as a key", "in a nested key"],
)
def test_a_lone_surrogate_in_an_event_rejects_it_alone(beacon, raw):
    """JSON.stringify writes a string cut between the halves of an emoji as a lone
    surrogate escape; PostgreSQL cannot store it. The event goes, the batch stays."""
    good = turn_event(model="rocket 🚀")  # json.dumps escapes it as a (valid) pair
    events = b"[" + factories.encode(good) + b", " + _with_raw(turn_event(), raw) + b"]"
    body = factories.encode(batch([])).replace(b'"events": []', b'"events": ' + events)
    r = beacon.post(body)
    assert r.status_code == 202, r.content
    assert r.json() == {
        "accepted": 1,
        "rejected": [{"index": 1, "error": "event is not valid UTF-8 JSON"}],
    }
    assert BrowserEvent.objects.get().data["model"] == "rocket 🚀"


@pytest.mark.parametrize(
    "body",
    [
        factories.encode(batch()).replace(b'"user-alice"', b'"user-\\udfff"'),
        factories.encode(batch()).replace(b'"v": 1', b'"\\ud800": 1, "v": 1'),
        factories.encode(batch()).replace(b'"user-alice"', b'"user-\xed\xa0\x80"'),
        factories.encode(batch()).replace(b'"v": 1', b'"v": 1, "x": "\\ud800"')[:-3],
    ],
    ids=["value", "key", "utf8-encoded surrogate", "truncated too"],
)
def test_a_lone_surrogate_in_the_envelope_is_400(beacon, body):
    r = beacon.post(body)
    assert (r.status_code, r.json()) == (400, {"error": "body is not valid UTF-8 JSON"})
    assert_nothing_written()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"tbt_summary": {"count": 3, "p50": "fast"}},
         "tbt_summary.p50: Expected `float | null`, got `str`"),
        ({"server_timing": [{"name": "db", "duration": -3}]},
         "server_timing[0].duration: Expected `float` >= 0.0"),
        ({"server_timing": [{"name": ["db"]}]},
         "server_timing[0].name: Expected `str`, got `array`"),
        ({"usage": {"output_tokens": 1e400}}, "usage[...]: Number out of range"),
        ({"tbt_gaps": [1, [2]]}, "tbt_gaps[1]: Expected `float`, got `array`"),
        ({"t_end": True}, "t_end: Expected `float | null`, got `bool`"),
    ],
    ids=["summary p50 a string", "negative server timing", "name a list", "huge usage",
         "nested gap", "bool time"],
)  # fmt: skip
def test_a_wrong_type_deep_in_an_event_rejects_it_alone_naming_the_path(beacon, change, error):
    wire = factories.encode(batch([turn_event(), turn_event(**change)]))
    wire = wire.replace(b"Infinity", b"1e400")  # json.dumps writes 1e400 as Infinity
    r = beacon.post(wire)
    assert r.status_code == 202, r.content
    assert r.json() == {"accepted": 1, "rejected": [{"index": 1, "error": error}]}
    assert BrowserEvent.objects.count() == 1


def test_an_unknown_event_type_is_rejected_alone(beacon):
    r = beacon.post(
        batch([{"type": "keystroke", "id": "k1", "ts": factories.now_ms()}, turn_event()])
    )
    assert r.status_code == 202
    assert r.json()["rejected"] == [{"index": 0, "error": "type: Invalid value 'keystroke'"}]
    assert BrowserEvent.objects.count() == 1


def test_non_utf8_bytes_inside_an_event_reject_only_that_event(beacon):
    good = factories.encode(turn_event())
    bad = b'{"type":"action","id":"a1","ts":%d,"name":"st\xff\xfeop"}' % int(factories.now_ms())
    envelope = factories.encode(batch([])).replace(
        b'"events": []', b'"events": [' + good + b"," + bad + b"]"
    )
    r = beacon.post(envelope)
    assert r.status_code == 202, r.content
    assert r.json()["accepted"] == 1
    assert r.json()["rejected"] == [{"index": 1, "error": "event is not valid UTF-8 JSON"}]
    assert BrowserEvent.objects.count() == 1


def test_strings_of_1_mb_are_cut_and_flagged_not_rejected(beacon):
    megabyte = "x" * 1_000_000
    event = turn_event(error=megabyte, model="m" * 20_000, outcome="error")
    body = batch([event], page={"url": "https://chat.example.com/" + "p" * 10_000})
    wire = factories.gzipped(factories.encode(body))
    assert len(wire) < 64 * 1024 < len(factories.encode(body))
    r = beacon.post(wire, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 202, r.content
    assert r.json() == {"accepted": 1, "rejected": []}
    row = BrowserEvent.objects.get()
    assert row.truncated is True
    assert row.data["error"] == "x" * 1024
    assert row.data["model"] == "m" * 512
    assert len(row.data["page_url"]) == 2048


def test_too_many_gaps_are_cut_to_512(beacon):
    r = beacon.post(batch([turn_event(tbt_gaps=[12.5] * 3000)]))
    assert r.status_code == 202
    row = BrowserEvent.objects.get()
    assert len(row.data["tbt_gaps"]) == 512 and row.truncated


# --- 400: malformed body ---------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b"{not json", None, "body is not valid UTF-8 JSON"),
        (b"", None, "empty body"),
        (b"[]", None, "invalid batch: Expected `object`, got `array`"),
        (factories.encode({**batch(), "v": 2}), "v", "invalid batch"),
        (factories.encode({k: v for k, v in batch().items() if k != "session"}), None, "session"),
        (factories.encode(batch(events={"a": 1})), "events", "invalid batch"),
        (factories.encode(batch(session={"id": "s" * 65})), "session.id", "invalid batch"),
        (b"{}", None, "invalid batch: Object missing required field"),
        (factories.encode(batch(sent_at=-5)), "sent_at", "invalid batch"),
        (
            factories.encode(batch()).replace(b'"sent_at": ', b'"sent_at": NaN, "x": '),
            None,
            "body is not valid UTF-8 JSON",
        ),
        (
            factories.encode(batch()).replace(b'"sess-alice"', b'"sess-\xff\xfe"'),
            None,
            "body is not valid UTF-8 JSON",
        ),
    ],
    ids=[
        "not json",
        "empty",
        "array",
        "wrong version",
        "no session",
        "events not a list",
        "session id too long",
        "empty object",
        "negative sent_at",
        "NaN",
        "non-utf8 in envelope",
    ],
)
def test_a_malformed_body_is_400_naming_the_field(beacon, body, field, message):
    r = beacon.post(body)
    assert r.status_code == 400, r.content
    assert message in r.json()["error"]
    if field:
        assert r.json()["field"] == field
    assert_nothing_written()


def test_deeply_nested_json_is_400_not_a_crash(beacon):
    depth = 200_000
    nested = b"[" * depth + b"]" * depth
    body = factories.encode(batch()).replace(b'"v": 1', b'"deep": ' + nested + b', "v": 1')
    wire = factories.gzipped(body)
    r = beacon.post(wire, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 400
    assert r.json()["error"] == "body is nested too deeply"
    assert_nothing_written()


def test_deep_nesting_inside_one_event_is_refused_whole(beacon):
    depth = 100_000
    event = (
        factories.encode(turn_event())[:-1]
        + b', "x": '
        + b'{"a":' * depth
        + b"1"
        + b"}" * depth
        + b"}"
    )
    body = factories.encode(batch([])).replace(b'"events": []', b'"events": [' + event + b"]")
    r = beacon.post(factories.gzipped(body), HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 400
    assert "nested too deeply" in r.json()["error"]
    assert_nothing_written()


def test_invalid_gzip_is_400(beacon):
    r = beacon.post(b"\x1f\x8bnot really gzip", HTTP_CONTENT_ENCODING="gzip")
    assert (r.status_code, r.json()["error"]) == (400, "body is not valid gzip")
    assert_nothing_written()


def test_truncated_gzip_is_400(beacon):
    wire = factories.gzipped(factories.encode(batch()))
    r = beacon.post(wire[: len(wire) // 2], HTTP_CONTENT_ENCODING="gzip")
    assert (r.status_code, r.json()["error"]) == (400, "gzip body is truncated")
    assert_nothing_written()


# --- 403: unknown key, foreign Origin -----------------------------------------------


def test_an_unknown_key_is_403(beacon):
    r = beacon.post(batch(), key="pk_doesnotexist")
    assert r.status_code == 403
    assert r.json() == {"error": "unknown public key", "field": "key"}
    assert_nothing_written()


def test_a_missing_key_is_403(beacon):
    r = beacon.client.post("/rum/v1/beacon", factories.encode(batch()), content_type="text/plain")
    assert r.status_code == 403
    assert r.json()["field"] == "key"
    assert_nothing_written()


def test_a_huge_key_is_403_without_a_lookup(beacon, django_assert_num_queries):
    with django_assert_num_queries(0):
        r = beacon.post(batch(), key="pk_" + "a" * 5000)
    assert r.status_code == 403
    assert_nothing_written()


def test_an_origin_outside_the_list_is_403(beacon):
    r = beacon.post(batch(), origin="https://evil.example.net")
    assert r.status_code == 403
    assert "origin 'https://evil.example.net' is not allowed" in r.json()["error"]
    assert "access-control-allow-origin" not in r.headers
    assert_nothing_written()


def test_a_lookalike_origin_is_403(beacon):
    for origin in (
        "https://chat.example.com.evil.net",
        "http://chat.example.com",
        "https://chat.example.com:8443",
        "null",
    ):
        assert beacon.post(batch(), origin=origin).status_code == 403, origin
    assert_nothing_written()


def test_an_allowed_origin_gets_cors_headers(beacon):
    r = beacon.post(batch())
    assert r.status_code == 202
    assert r.headers["access-control-allow-origin"] == factories.CHAT_ORIGIN
    assert "origin" in r.headers["vary"].lower()


def test_a_request_without_origin_is_accepted(beacon):
    assert beacon.post(batch(), origin=None).status_code == 202


@pytest.mark.django_db
def test_wildcard_origins_allow_subdomains_only(client):
    app = factories.make_app(origins=["https://*.example.org"])
    bc = BeaconClient(client, app)
    assert bc.post(batch(), origin="https://eu.chat.example.org").status_code == 202
    assert bc.post(batch(), origin="https://evil-example.org").status_code == 403
    assert bc.post(batch(), origin="http://eu.example.org").status_code == 403


def test_a_preflight_from_an_allowed_origin_is_answered(beacon):
    r = beacon.client.options(
        f"/rum/v1/beacon?key={beacon.app.application.public_key}",
        HTTP_ORIGIN=factories.CHAT_ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == factories.CHAT_ORIGIN
    assert "POST" in r.headers["access-control-allow-methods"]
    assert "content-type" in r.headers["access-control-allow-headers"]


def test_a_preflight_from_a_foreign_origin_gets_no_cors_headers(beacon):
    r = beacon.client.options(
        f"/rum/v1/beacon?key={beacon.app.application.public_key}",
        HTTP_ORIGIN="https://evil.example.net",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert "access-control-allow-origin" not in r.headers
    assert_nothing_written()


# --- 413: too large ------------------------------------------------------------------


def test_201_events_is_413(beacon):
    r = beacon.post(batch([factories.action_event() for _ in range(201)]))
    assert r.status_code == 413
    assert r.json() == {"error": "at most 200 events a batch", "field": "events"}
    assert_nothing_written()


def test_a_body_over_64_kib_on_the_wire_is_413(beacon):
    body = factories.encode(batch([turn_event(error="e" * 70_000)]))
    r = beacon.post(body)
    assert r.status_code == 413
    assert "65536 bytes on the wire" in r.json()["error"]
    assert_nothing_written()


def test_a_gzip_bomb_is_413_without_inflating_it_whole(beacon):
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = b" " * (1 << 20)
    wire = b"".join(compressor.compress(chunk) for _ in range(60)) + compressor.flush()
    assert len(wire) < 64 * 1024  # 60 MiB inflated from under 64 KiB on the wire
    r = beacon.post(wire, HTTP_CONTENT_ENCODING="gzip")
    assert r.status_code == 413
    assert r.json()["error"] == "body inflates to more than 1048576 bytes"
    assert_nothing_written()


# --- 415: content type and encoding ----------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml", ""],
)
def test_other_content_types_are_415(beacon, content_type):
    r = beacon.post(batch(), content_type=content_type)
    assert r.status_code == 415
    assert r.json()["error"] == "Content-Type must be application/json or text/plain"
    assert_nothing_written()


def test_an_unsupported_content_encoding_is_415(beacon):
    r = beacon.post(batch(), HTTP_CONTENT_ENCODING="br")
    assert r.status_code == 415
    assert "Content-Encoding" in r.json()["error"]
    assert_nothing_written()


# --- 429: rate limits ---------------------------------------------------------------


@override_settings(LLMRUM_BEACON_RATE_LIMIT=1.0)
def test_an_application_over_its_rate_is_429_with_retry_after(beacon):
    assert beacon.post(batch()).status_code == 202  # burst of 2
    assert beacon.post(batch()).status_code == 202
    r = beacon.post(batch())
    assert r.status_code == 429
    assert r.json() == {"error": "too many requests"}
    assert int(r.headers["Retry-After"]) >= 1
    assert BrowserEvent.objects.count() == 2


@override_settings(LLMRUM_BEACON_IP_RATE_LIMIT=1.0)
def test_one_client_over_its_rate_is_429_and_others_go_on(beacon):
    beacon.post(batch())
    beacon.post(batch())
    assert beacon.post(batch()).status_code == 429
    assert beacon.post(batch(), REMOTE_ADDR="203.0.113.9").status_code == 202


# --- other methods ---------------------------------------------------------------------


def test_get_is_405(beacon):
    r = beacon.client.get(f"/rum/v1/beacon?key={beacon.app.application.public_key}")
    assert r.status_code == 405
    assert r.headers["Allow"] == "POST, OPTIONS"


def test_json_numbers_keep_their_precision(beacon):
    t = 1764000000000.0
    event = turn_event(t_send=t, t_headers=t + 100, t_first_token=1764000000123.456,
                       t_last_token=t + 900, t_end=t + 1000)  # fmt: skip
    beacon.post(batch([event]))
    assert math.isclose(BrowserEvent.objects.get().data["t_first_token"], 1764000000123.456)


@pytest.mark.django_db(transaction=True)
@override_settings(LLMRUM_APP_CACHE_SECONDS=60)
def test_a_failing_write_is_503_and_writes_nothing(client):
    """The application is deleted while web processes still cache its key: the
    write fails on its foreign key, and not one row of the batch remains."""
    created = factories.make_app()
    bc = BeaconClient(client, created)
    assert bc.post(batch()).status_code == 202  # caches the key
    Application.objects.filter(pk=created.application.pk).delete()
    assert stored() == (0, 0, 0)
    r = bc.post(batch([turn_event(), factories.action_event()], session={"id": "new-session"}))
    assert r.status_code == 503
    assert r.headers["Retry-After"] == "5"
    assert json.loads(r.content)["error"] == "storage unavailable, retry later"
    assert_nothing_written()


@pytest.mark.postgres
def test_the_beacon_write_is_one_prepared_statement_on_postgres(beacon):
    beacon.post(batch())
    assert beacon.post(batch([turn_event(), turn_event()])).status_code == 202
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s",
            ["%jsonb_to_recordset%"],
        )
        assert cursor.fetchone()[0] == 1
    assert BrowserEvent.objects.count() == 3


def test_nul_characters_are_removed_not_a_failed_write(beacon):
    """PostgreSQL cannot store NUL: the batch is stored without them, flagged, not refused."""
    body = batch(
        [turn_event(model="gpt\u00004o", usage={"in\u0000put": 3}), factories.action_event()],
        user={"id": "u\u0000ser"},
        sdk={"name": "llmrum", "version": "0.1\u0000"},
    )
    r = beacon.post(body)
    assert r.status_code == 202, r.content
    assert r.json() == {"accepted": 2, "rejected": []}
    turn = BrowserEvent.objects.get(type="turn")
    assert turn.data["model"] == "gpt4o" and turn.truncated
    assert "in\u0000put" not in turn.data["usage"]
    session = BrowserSession.objects.get()
    assert (session.user_id, session.sdk_version) == ("user", "0.1")
