"""No duration the stitch computes from ingested data is negative (DESIGN.md §10.1):
ingest refuses the turns and spans whose times cannot be true, and the stitch does
not measure a first token from before its request."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

from correlator.stitch.rules import server_ttft, turn_metrics
from rumserver.ingest.beacon.parse import parse_batch
from tests import factories

T0_NS = 1_767_225_600_000_000_000


@dataclass
class FakeSpan:
    span_id: str
    start_ns: int
    ttft_s: float | None = None
    ttft_source: str = ""
    parent_span_id: str = ""
    kind: int = 2
    role: str = "gateway"
    service: str = "gw"
    end_ns: int = T0_NS + 10**9
    queue_s: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    request_model: str = ""
    response_model: str = ""


def test_a_first_token_event_from_before_the_gateway_request_is_not_its_ttft():
    gateway = FakeSpan("a" * 16, start_ns=T0_NS)
    # Another span of the gateway service (a retry, a warm-up) whose event precedes it.
    earlier = FakeSpan("b" * 16, start_ns=T0_NS - 500_000_000, ttft_s=0.2,
                       ttft_source="event:first_token", kind=3)  # fmt: skip
    assert server_ttft([gateway, earlier], gateway) == (None, "")
    later = FakeSpan("c" * 16, start_ns=T0_NS + 100_000_000, ttft_s=0.2,
                     ttft_source="event:first_token", kind=3)  # fmt: skip
    ms, source = server_ttft([gateway, earlier, later], gateway)
    assert (round(ms, 6), source) == (300.0, "event:first_token")


def test_no_turn_accepted_at_ingest_has_a_negative_duration():
    """Random turns, sub-millisecond jitter included: every one ingest accepts gives
    a client TTFT, TPOT and token gaps of zero or more."""
    rng = random.Random(11)
    t0 = 1_767_225_600_000.0
    events = []
    for _ in range(200):
        times = [t0]
        for _ in range(4):
            times.append(times[-1] + rng.choice([rng.uniform(-1.0, 0), rng.uniform(0, 900)]))
        names = ["t_send", "t_headers", "t_first_token", "t_last_token", "t_end"]
        turn = factories.turn_event(**dict(zip(names, times, strict=True)), ts=times[-1])
        turn["output_tokens"] = rng.randint(0, 50)
        events.append(turn)
    body = json.dumps(factories.batch(events)).encode()
    parsed = parse_batch(body, max_events=200)
    # Jitter piling up past the tolerance is refused; most turns get through.
    assert all(r["error"].startswith("time_order: ") for r in parsed.rejected)
    assert len(parsed.rows) > 100 and len(parsed.rows) + len(parsed.rejected) == 200
    for row in parsed.rows:
        metrics = turn_metrics(row.data, [], row.span_id)
        assert metrics.client_ttft_ms is not None and metrics.client_ttft_ms >= 0
        assert metrics.tpot_ms is None or metrics.tpot_ms >= 0
        for gap in (metrics.tbt_p50_ms, metrics.tbt_p95_ms, metrics.tbt_max_ms):
            assert gap is None or gap >= 0
