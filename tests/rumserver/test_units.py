"""Plain functions of ingest, tested without HTTP."""

from __future__ import annotations

import gzip
import zlib

import pytest

from rumserver.applications import ApplicationError, IngestApp, normalize_origin
from rumserver.env import EnvError, env_bool, env_float, env_int, env_list
from rumserver.ingest.beacon.parse import cut, parse_batch, split_validation_error
from rumserver.ingest.beacon.useragent import parse_user_agent
from rumserver.ingest.errors import IngestError
from rumserver.ingest.parsers import gunzip_capped
from rumserver.ingest.ratelimit import Limit, TokenBuckets, retry_after_seconds
from tests import factories


def test_gunzip_capped_stops_at_the_limit():
    bomb = zlib.compress(b"\0" * 10_000_000, 9)  # zlib, not gzip: refused as not gzip
    with pytest.raises(IngestError, match="not valid gzip"):
        gunzip_capped(bomb, max_body=1000)
    with pytest.raises(IngestError) as info:
        gunzip_capped(gzip.compress(b"\0" * 10_000_000), max_body=1000)
    assert info.value.status == 413
    assert gunzip_capped(gzip.compress(b"x" * 1000), max_body=1000) == b"x" * 1000


def test_token_buckets_refill_at_the_rate():
    now = [0.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    a = [Limit("a", rate=2, burst=2)]
    assert buckets.take(a) == 0.0
    assert buckets.take(a) == 0.0
    wait = buckets.take(a)
    assert wait == pytest.approx(0.5)
    assert retry_after_seconds(wait) == 1
    assert buckets.take([Limit("b", rate=2, burst=2)]) == 0.0  # other keys are independent
    now[0] = 0.5
    assert buckets.take(a) == 0.0


def test_token_buckets_take_from_every_limit_or_none():
    now = [0.0]
    buckets = TokenBuckets(clock=lambda: now[0])
    app, ip = Limit("app", rate=10, burst=10), Limit("ip", rate=1, burst=1)
    assert buckets.take([app, ip]) == 0.0
    assert buckets.take([app, ip]) == pytest.approx(1.0)  # the address is out
    # The refused request took nothing from the application's bucket: 9 left.
    assert [buckets.take([app]) for _ in range(10)].count(0.0) == 9


def test_token_buckets_stay_bounded_under_a_flood_of_keys():
    buckets = TokenBuckets(max_keys=100)
    for i in range(1000):
        buckets.take([Limit(f"ip:{i}", rate=1, burst=1)])
    assert len(buckets._tat) <= 100


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("https://Chat.Example.com:443/", "https://chat.example.com"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://localhost:80", "http://localhost"),
        ("http://[::1]:3000", "http://[::1]:3000"),
        ("*", "*"),
    ],
)
def test_normalize_origin(raw, normal):
    assert normalize_origin(raw) == normal


@pytest.mark.parametrize("raw", ["chat.example.com", "javascript:alert(1)", "https://a/b?c", ""])
def test_normalize_origin_refuses_what_is_not_an_origin(raw):
    with pytest.raises(ApplicationError):
        normalize_origin(raw)


def test_origin_matching_is_exact_or_a_subdomain_wildcard():
    app = IngestApp(
        id=1,
        slug="a",
        allowed_origins=frozenset({"https://chat.example.com"}),
        wildcard_suffixes=(("https", ".example.org"),),
        allow_any_origin=False,
    )
    assert app.origin_allowed("https://chat.example.com")
    assert app.origin_allowed("https://a.b.example.org")
    assert app.origin_allowed("https://a.example.org:8443")
    assert not app.origin_allowed("https://example.org")
    assert not app.origin_allowed("https://evilexample.org")
    assert not app.origin_allowed("http://a.example.org")
    assert not app.origin_allowed("https://chat.example.com.evil.net")


def test_cut_shortens_strings_lists_and_maps_and_says_so():
    data, truncated = cut({"error": "e" * 5000, "tbt_gaps": [1.0] * 600, "usage": {"a": 1}})
    assert truncated
    assert len(data["error"]) == 1024 and len(data["tbt_gaps"]) == 512
    assert cut({"model": "gpt-4o", "usage": {"a": 1}}) == (
        {"model": "gpt-4o", "usage": {"a": 1}},
        False,
    )
    many = {f"k{i}": "v" for i in range(100)}
    data, truncated = cut({"attrs": many})
    assert truncated and len(data["attrs"]) == 32


def test_split_validation_error_names_the_field():
    assert split_validation_error(
        ValueError("Expected `int`, got `str` - at `$.events[2].ts`")
    ) == (
        "Expected `int`, got `str`",
        "events[2].ts",
    )
    assert split_validation_error(ValueError("plain")) == ("plain", None)


def test_parse_batch_rejects_bad_events_and_keeps_good_ones():
    body = factories.encode(
        factories.batch([factories.turn_event(), factories.turn_event(span_id="nothex")])
    )
    parsed = parse_batch(body, max_events=200)
    assert len(parsed.rows) == 1
    assert parsed.rejected[0]["index"] == 1 and "span_id" in parsed.rejected[0]["error"]
    assert parsed.trace_ids == [parsed.rows[0].trace_id]


@pytest.mark.parametrize(
    ("ua", "device", "bot"),
    [
        (factories.CHROME_UA, "desktop", False),
        (factories.IPHONE_UA, "mobile", False),
        (factories.GOOGLEBOT_UA, "bot", True),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
            "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "tablet",
            False,
        ),
        ("", "other", False),
        ("\x00\xff garbage" * 40, "other", False),
    ],
)
def test_user_agents_become_device_classes(ua, device, bot):
    parsed = parse_user_agent(ua)
    assert (parsed.device_class, parsed.is_bot) == (device, bot)


def test_env_helpers_fail_loudly(monkeypatch):
    monkeypatch.setenv("X_INT", "10O")
    with pytest.raises(EnvError, match="X_INT must be an integer"):
        env_int("X_INT", 1)
    monkeypatch.setenv("X_INT", "5")
    with pytest.raises(EnvError, match="at least 100"):
        env_int("X_INT", 1, minimum=100)
    monkeypatch.setenv("X_BOOL", "maybe")
    with pytest.raises(EnvError, match="X_BOOL must be a boolean"):
        env_bool("X_BOOL", False)
    monkeypatch.setenv("X_FLOAT", "nan")
    with pytest.raises(EnvError):
        env_float("X_FLOAT", 1.0, minimum=0)
    monkeypatch.setenv("X_LIST", " a, b ,,c ")
    assert env_list("X_LIST", []) == ["a", "b", "c"]
    monkeypatch.delenv("X_LIST")
    assert env_list("X_LIST", ["d"]) == ["d"]
