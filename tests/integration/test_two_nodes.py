"""Many machines (DESIGN.md §10.7, docs/deploy.md): two gunicorn web nodes and two
Celery workers, with one beat, on one PostgreSQL and one Redis, as deploy/compose.yaml
runs them. Each trace's pieces reach different nodes; every trace is stitched into one
trace and one turn, by both workers between them; and the rate limits hold for the
nodes together: a browser's through HTTP on both nodes hammered at once, the
application's own (at least 100 a second) in two processes taking at full speed."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from correlator.models import Trace, Turn
from rumserver.models import BrowserEvent, DirtyTrace, Span
from tests import factories
from tests.correlator.golden import GoldenTurn
from tests.integration.conftest import ROOT, Process, http, post_beacon, subprocess_env
from tests.integration.test_ingest_edge import private_redis  # noqa: F401 - the fixture

pytestmark = [pytest.mark.postgres]

SWEEP_LINE = re.compile(r"correlator sweep: (\d+) traces stitched")


def cluster_env(redis_port: int, **overrides: str) -> dict[str, str]:
    """What every role of deploy/compose.yaml shares: the broker on Redis db 0, the
    shared rate limits on db 1 of the same server."""
    return {
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "LLMRUM_CACHE_URL": f"redis://127.0.0.1:{redis_port}/1",
        **overrides,
    }


@pytest.fixture
def start_beat(transactional_db: Any, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """The one beat of the deployment; stopped after the test."""
    started: list[Process] = []

    def start(**env: str) -> Process:
        args = [sys.executable, "-m", "celery", "-A", "rumserver", "beat", "--loglevel", "INFO",
                "--schedule", str(tmp_path / "celerybeat-schedule")]  # fmt: skip
        beat = Process(args, subprocess_env(**env), tmp_path / "beat.log")
        started.append(beat)
        beat.wait_for(lambda text: "beat: Starting" in text, timeout=60)
        return beat

    yield start
    for beat in started:
        beat.stop()


def stitched_by(worker: Process) -> list[int]:
    """The traces each sweep this worker ran stitched, from its log."""
    return [int(n) for n in SWEEP_LINE.findall(worker.output())]


def send_turn(nodes: list[str], app: Any, golden: GoldenTurn, first: int) -> None:
    """One turn's three pieces, as a browser, a gateway and a model server send them,
    to alternating nodes: the beacon and the model's spans to one, the gateway's to the
    other."""
    auth = {
        "Authorization": f"Bearer {app.ingest_token}",
        "Content-Type": "application/x-protobuf",
    }
    beacon_node, other = nodes[first % 2], nodes[(first + 1) % 2]
    status, _, body = post_beacon(beacon_node, app.application.public_key, golden.beacon())
    assert (status, json.loads(body)) == (202, {"accepted": 1, "rejected": []}), body
    for node, proto in ((other, golden.gateway_request()), (beacon_node, golden.model_request())):
        status, _, body = http("POST", f"{node}/v1/traces", proto, auth)
        assert (status, body) == (200, b""), body


def test_two_nodes_and_two_workers_stitch_every_trace_once(
    # Redis first, so that it stops last, after the processes that use it.
    private_redis: Callable[[], Process],  # noqa: F811
    start_web: Callable[..., str],
    start_worker: Callable[..., Process],
    start_beat: Callable[..., Process],
) -> None:
    redis = private_redis()
    env = cluster_env(
        redis.port,  # type: ignore[attr-defined]
        # The rate limits are the other test's subject: far out of the way here.
        LLMRUM_BEACON_RATE_LIMIT="1000000",
        LLMRUM_BEACON_IP_RATE_LIMIT="1000000",
        LLMRUM_OTLP_RATE_LIMIT="1000000",
        LLMRUM_SWEEP_SECONDS="1",
    )
    nodes = [start_web(**env), start_web(**env)]
    workers = [start_worker(**env), start_worker(**env)]
    beat = start_beat(**env)
    created = factories.make_app()
    goldens: list[GoldenTurn] = []

    def wave(count: int) -> None:
        batch = [
            GoldenTurn(t0=time.time() * 1000 - 2000, session=f"s{(len(goldens) + i) % 12}")
            for i in range(count)
        ]
        offset = len(goldens)
        goldens.extend(batch)
        # Four browsers and services at once; each trace's pieces go to both nodes.
        with ThreadPoolExecutor(max_workers=4) as pool:
            for future in [
                pool.submit(send_turn, nodes, created, golden, offset + i)
                for i, golden in enumerate(batch)
            ]:
                future.result()

    def settled() -> bool:
        ids = [g.trace_id for g in goldens]
        whole = Turn.objects.filter(
            trace__trace_id__in=ids, model_ttft_ms__isnull=False, server_ttft_ms__isnull=False
        )
        return whole.count() == len(ids) and not DirtyTrace.objects.exists()

    wave(120)
    # The work goes to whichever worker takes a hint or beat's sweep first; on a busy
    # machine one worker might take them all for a while, so more turns come (a real
    # product's traffic does not stop either) until both have stitched some.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not (
        settled() and all(sum(stitched_by(w)) > 0 for w in workers)
    ):
        if settled():
            wave(10)
        time.sleep(1)
    logs = "\n".join(p.output()[-2500:] for p in [*workers, beat])
    assert settled(), logs
    assert all(sum(stitched_by(w)) > 0 for w in workers), logs

    ids = {g.trace_id for g in goldens}
    n = len(ids)
    # One trace and one turn per trace sent, nothing else and nothing twice.
    assert (
        set(Trace.objects.filter(app=created.application).values_list("trace_id", flat=True)) == ids
    )
    assert Trace.objects.filter(app=created.application).count() == n
    assert Turn.objects.filter(app=created.application).count() == n
    # Each stored once: three spans the services sent and the browser span the stitch made.
    spans = Counter(Span.objects.filter(app=created.application).values_list("trace_id", flat=True))
    assert spans == {trace_id: 4 for trace_id in ids}
    assert Span.objects.filter(app=created.application, role="browser").count() == n
    assert BrowserEvent.objects.filter(app=created.application).count() == n
    # Every turn was stitched from all of its pieces together, though they reached
    # different nodes: the model's TTFT (one node) and the gateway's (the other).
    assert not Turn.objects.filter(app=created.application, model_ttft_ms__isnull=True).exists()
    assert not Turn.objects.filter(app=created.application, server_ttft_ms__isnull=True).exists()
    assert all(span_count == 4 for span_count in Trace.objects.values_list("span_count", flat=True))
    # Both workers' sweeps between them stitched at least every trace (a trace whose
    # beacon came before its spans is stitched again when they arrive).
    assert sum(sum(stitched_by(w)) for w in workers) >= n


# Beacons a second per browser (client address) within the application, bursts of
# twice that (rumserver.ingest.views). The application's own bucket takes at least 100
# a second (LLMRUM_BEACON_RATE_LIMIT's least value), more than two single-process
# nodes on a busy 2-core machine answer (47 a second measured): through HTTP the
# per-address bucket is the one a test can empty; the last test takes the
# application's at full speed.
RATE = 2
BURST = 2 * RATE
BROWSERS = [f"198.51.100.{n}" for n in range(1, 5)]
RATE_APP = 100  # LLMRUM_BEACON_RATE_LIMIT's least value


def test_two_nodes_hold_one_rate_limit_between_them(
    private_redis: Callable[[], Process],  # noqa: F811
    start_web: Callable[..., str],
) -> None:
    redis = private_redis()
    env = cluster_env(
        redis.port,  # type: ignore[attr-defined]
        LLMRUM_BEACON_IP_RATE_LIMIT=str(RATE),
        # The browsers are behind the load balancer (here: this test on 127.0.0.1),
        # which says who they are in X-Forwarded-For.
        LLMRUM_TRUSTED_PROXIES="127.0.0.1/32",
    )
    nodes = [start_web(**env), start_web(**env)]
    created = factories.make_app()
    key = created.application.public_key
    # (browser, node, status, headers, body) of every request
    results: list[tuple[str, int, int, dict[str, str], bytes]] = []

    def post(i: int) -> tuple[str, int, int, dict[str, str], bytes]:
        # Each browser's requests alternate between the nodes, as a balancer spreads them.
        browser, node = BROWSERS[(i // 2) % len(BROWSERS)], i % 2
        headers = {"X-Forwarded-For": browser}
        status, answer_headers, body = post_beacon(nodes[node], key, factories.batch(), headers)
        return browser, node, status, answer_headers, body

    def refused_everywhere() -> bool:
        refusals = {(b, n) for b, n, status, _, _ in results if status == 429}
        return len(refusals) == 2 * len(BROWSERS)

    # Both nodes at once, eight connections, until every browser has been refused by
    # both nodes: then each sent more than one shared bucket allows in the window.
    # Buckets of each node's own would take twice as much.
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        while not refused_everywhere() and len(results) < 5_000:
            results.extend(pool.map(post, range(len(results), len(results) + 80)))
    elapsed = time.monotonic() - started
    assert refused_everywhere(), Counter((b, n, s) for b, n, s, _, _ in results)

    statuses = Counter(status for _, _, status, _, _ in results)
    assert set(statuses) == {202, 429}, statuses
    for browser in BROWSERS:
        accepted = sum(1 for b, _, status, _, _ in results if b == browser and status == 202)
        # GCRA's promise for the window the requests were sent in: the full bucket at
        # once, then RATE a second (plus one for the rounding of Redis's microseconds).
        assert BURST <= accepted <= BURST + RATE * elapsed + 1, (browser, accepted, elapsed)
    _, _, _, headers, body = next(r for r in results if r[2] == 429)
    assert json.loads(body) == {"error": "too many requests"}, body
    assert int(headers["Retry-After"]) >= 1
    # Nothing accepted was lost, nothing refused was stored.
    assert BrowserEvent.objects.filter(app=created.application).count() == statuses[202]


# One process of a web node taking from the beacon limits exactly as the view does,
# as fast as it can from START to START + 2 s (wall clock, shared by the processes).
TAKER = """
import json, sys, time
import django
django.setup()
from rumserver.applications import ingest_app_by_public_key
from rumserver.ingest import views
from rumserver.ingest.errors import IngestError

app = ingest_app_by_public_key(sys.argv[1])
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
taken = refused = i = 0
first = time.time()
while time.time() < start + 2:
    try:
        views._browser_rate_limit(app, f"198.51.100.{i % 200}")
        taken += 1
    except IngestError as error:
        assert error.status == 429, error
        refused += 1
    i += 1
print(json.dumps({"taken": taken, "refused": refused, "first": first, "last": time.time()}))
"""


def test_the_applications_own_bucket_is_one_for_every_process(
    private_redis: Callable[[], Process],  # noqa: F811
    transactional_db: Any,
) -> None:
    """The application's bucket (at least 100 beacons a second) at full speed: two
    processes of two nodes take from it without HTTP in front (which this machine
    cannot drive past 100 a second), through the view's own limits and Redis script."""
    redis = private_redis()
    env = subprocess_env(
        **cluster_env(redis.port, LLMRUM_BEACON_RATE_LIMIT=str(RATE_APP))  # type: ignore[attr-defined]
    )
    created = factories.make_app()
    start = time.time() + 15  # both processes loaded and waiting by then, even on a busy machine
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, created.application.public_key, str(start)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for _ in range(2)
    ]
    outputs = [taker.communicate(timeout=120) for taker in takers]
    assert all(t.returncode == 0 for t in takers), [err[-2000:] for _, err in outputs]
    counts = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert min(c["first"] for c in counts) >= start, counts
    window = max(c["last"] for c in counts) - min(c["first"] for c in counts)
    taken = sum(c["taken"] for c in counts)
    # Each process was refused: together they asked for more than the bucket gives.
    assert all(c["refused"] > 0 and c["taken"] > 0 for c in counts), counts
    # One bucket: full at once, then RATE_APP a second, for both processes together.
    # Two of their own would have given each process as much.
    assert 2 * RATE_APP <= taken <= 2 * RATE_APP + RATE_APP * window + 1, (counts, window)
