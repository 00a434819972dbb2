"""The ingest edge on real servers (DESIGN.md §10.1): chunked bodies under gunicorn
and uvicorn, rate limits shared by two web processes through Redis, clients behind a
trusted proxy, and /healthz while a private Redis broker is stopped."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rumserver.models import BrowserEvent, Span
from tests import factories
from tests.integration.conftest import (
    BEACON_HEADERS,
    Process,
    free_port,
    http,
    post_beacon,
    subprocess_env,
)
from tests.otlp import builders
from tests.rumserver.test_chunked import post_chunked, split

pytestmark = [pytest.mark.postgres]


def beacon_url(base: str, app: Any) -> str:
    return f"{base}/rum/v1/beacon?key={app.application.public_key}"


@pytest.fixture
def start_asgi(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., str]]:
    """uvicorn serving rumserver.asgi on the test database; returns the base URL."""
    pytest.importorskip("uvicorn")
    started: list[Process] = []

    def start(**env: str) -> str:
        port = free_port()
        args = [sys.executable, "-m", "uvicorn", "rumserver.asgi:application",
                "--host", "127.0.0.1", "--port", str(port), "--no-access-log"]  # fmt: skip
        proc = Process(args, subprocess_env(**env), tmp_path / f"asgi-{port}.log")
        started.append(proc)
        proc.wait_for(lambda text: "Uvicorn running" in text)
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.stop()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_chunked_bodies_are_read_like_sized_ones(server, request):
    base = request.getfixturevalue("start_web" if server == "gunicorn" else "start_asgi")()
    app = factories.make_app()
    turn = factories.turn_event()
    status, _, body = post_chunked(
        beacon_url(base, app), split(factories.encode(factories.batch([turn])), 64), BEACON_HEADERS
    )
    assert status == 202, body
    assert json.loads(body) == {"accepted": 1, "rejected": []}
    assert BrowserEvent.objects.get().trace_id == turn["trace_id"]

    auth = {"Authorization": f"Bearer {app.ingest_token}"}
    trace = bytes.fromhex(factories.trace_id())
    proto = builders.request([builders.span(trace_id=trace) for _ in range(3)])
    status, _, body = post_chunked(
        f"{base}/v1/traces",
        split(gzip.compress(proto.SerializeToString()), 40),
        {**auth, "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    assert (status, body) == (200, b"")
    json_trace, json_span = factories.trace_id(), factories.span_id()
    status, _, body = post_chunked(
        f"{base}/v1/traces",
        split(builders.otlp_json(json_trace, json_span), 50),
        {**auth, "Content-Type": "application/json"},
    )
    assert (status, json.loads(body)) == (200, {})
    assert Span.objects.filter(trace_id=trace.hex()).count() == 3
    assert Span.objects.filter(trace_id=json_trace, span_id=json_span).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("server", ["gunicorn", "uvicorn"])
def test_a_chunked_body_over_the_limit_is_413_and_stores_nothing(server, request):
    base = request.getfixturevalue("start_web" if server == "gunicorn" else "start_asgi")()
    app = factories.make_app()
    events = [factories.turn_event(error="x" * 900) for _ in range(100)]  # ~100 KiB > 64 KiB
    chunks = split(factories.encode(factories.batch(events)), 4096)
    status, _, body = post_chunked(beacon_url(base, app), chunks, BEACON_HEADERS)
    assert status == 413
    assert json.loads(body) == {"error": "body is larger than 65536 bytes on the wire"}
    assert BrowserEvent.objects.count() == 0


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], Process]]:
    """A Redis server of this test's own, on a free port, that the test may stop."""
    if shutil.which("redis-server") is None:
        pytest.skip("needs redis-server on PATH")
    started: list[Process] = []

    def start() -> Process:
        port = free_port()
        args = [shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(tmp_path)]  # fmt: skip
        proc = Process(args, {}, tmp_path / f"redis-{port}.log")
        proc.port = port  # type: ignore[attr-defined]
        started.append(proc)
        proc.wait_for(lambda text: "Ready to accept connections" in text)
        return proc

    yield start
    for proc in started:
        proc.stop()


def test_healthz_keeps_the_node_while_its_broker_is_stopped(start_web, private_redis):
    broker = private_redis()
    base = start_web(CELERY_BROKER_URL=f"redis://127.0.0.1:{broker.port}/0")
    status, _, body = http("GET", base + "/healthz")
    assert (status, json.loads(body)["broker"]) == (200, "ok")

    broker.stop()
    app = factories.make_app()
    status, _, body = post_beacon(base, app.application.public_key, factories.batch())
    assert status == 202, body
    assert BrowserEvent.objects.count() == 1  # ingest commits with the broker down
    started = time.monotonic()
    status, _, body = http("GET", base + "/healthz")
    elapsed = time.monotonic() - started
    report = json.loads(body)
    assert status == 200, report
    assert (report["status"], report["database"], report["broker"]) == ("ok", "ok", "down")
    assert report["checks"]["broker"].startswith("error:")
    assert elapsed < 10  # answered, not hung on the dead broker


def post_beacons(bases: list[str], app: Any, count: int, **headers: str) -> list[int]:
    """``count`` beacons, to each of ``bases`` in turn; their statuses."""
    key = app.application.public_key
    return [
        post_beacon(bases[i % len(bases)], key, factories.batch(), headers)[0] for i in range(count)
    ]


def test_two_web_processes_share_one_rate_limit(start_web, private_redis):
    cache = private_redis()
    env = {
        "LLMRUM_CACHE_URL": f"redis://127.0.0.1:{cache.port}/0",
        # One request a second per client address, bursts of two.
        "LLMRUM_BEACON_IP_RATE_LIMIT": "1",
    }
    bases = [start_web(**env), start_web(**env)]
    app = factories.make_app()
    started = time.monotonic()
    statuses = post_beacons(bases, app, 8)
    elapsed = time.monotonic() - started
    accepted = statuses.count(202)
    # Two buckets of their own would take four at once; one shared bucket takes the
    # burst of two, plus one a second since.
    assert 2 <= accepted <= 2 + int(elapsed) + 1, (statuses, elapsed)
    assert statuses.count(429) == 8 - accepted
    assert BrowserEvent.objects.count() == accepted


def test_the_limit_holds_while_the_cache_is_down_by_letting_requests_through(
    start_web, private_redis
):
    cache = private_redis()
    base = start_web(
        LLMRUM_CACHE_URL=f"redis://127.0.0.1:{cache.port}/0", LLMRUM_BEACON_IP_RATE_LIMIT="1"
    )
    cache.stop()
    app = factories.make_app()
    # Rate limits fail open: a cache outage must never take ingest down with it.
    assert post_beacons([base], app, 4) == [202] * 4
    assert BrowserEvent.objects.count() == 4


def test_clients_behind_a_trusted_proxy_are_limited_by_their_own_address(start_web):
    base = start_web(LLMRUM_TRUSTED_PROXIES="127.0.0.0/8", LLMRUM_BEACON_IP_RATE_LIMIT="1")
    app = factories.make_app()
    alice = post_beacons([base], app, 4, **{"X-Forwarded-For": "198.51.100.7"})
    assert alice[:2] == [202, 202] and alice[-1] == 429
    # Another browser behind the same proxy has its own bucket...
    assert post_beacons([base], app, 1, **{"X-Forwarded-For": "198.51.100.8"}) == [202]
    # ...and what a browser writes on the left of the header changes nothing.
    spoofed = post_beacons([base], app, 1, **{"X-Forwarded-For": "203.0.113.1, 198.51.100.7"})
    assert spoofed == [429]


def test_without_trusted_proxies_forwarded_headers_are_ignored(start_web):
    base = start_web(LLMRUM_BEACON_IP_RATE_LIMIT="1")
    app = factories.make_app()
    statuses = [
        post_beacons([base], app, 1, **{"X-Forwarded-For": f"198.51.100.{i}"})[0] for i in range(4)
    ]
    assert statuses[-1] == 429  # every request is the connecting address, 127.0.0.1


def test_a_bad_trusted_proxy_setting_stops_the_process_with_its_name():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env={
            **subprocess_env(),
            "LLMRUM_TRUSTED_PROXIES": "10.0.0.0/8,not-a-network",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "LLMRUM_TRUSTED_PROXIES: 'not-a-network' is not an address or CIDR" in result.stderr
