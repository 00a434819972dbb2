"""Clock skew from every sample of the session (DESIGN.md §10.3), as pure functions:
each Server-Timing echo and beacon bounds θ (server minus browser clock); a turn takes
the middle of the intersection of its session's bounds."""

from __future__ import annotations

import math

import pytest

from correlator.stitch.rules import (
    ClockSample,
    Skew,
    beacon_sample,
    estimate_skew,
    server_timing_sample,
    tighten,
)

T = 1_764_000_000_000.0  # browser epoch ms of the first request


def exchange(
    *, at: float, theta: float, up: float = 20.0, queue: float = 0.0, work: float = 50.0,
    down: float = 20.0,
) -> dict:  # fmt: skip
    """A turn event as the SDK reports it, for one request whose true offset is
    ``theta``: ``up`` ms on the wire to the server, ``queue`` ms waiting before the
    app sees it (the helper's clock starts after that), ``work`` ms in the app, ``down``
    ms back to the browser."""
    t0 = at  # browser clock
    t1 = at + theta + up + queue  # server clock: the helper sees the request
    t2 = t1 + work  # server clock: response headers leave
    t3 = t2 - theta + down  # browser clock: headers arrive
    return {
        "t_send": t0,
        "t_headers": t3,
        "server_timing": [
            {"name": "total", "duration": work},
            {"name": "llmrum-now", "description": f"{t2:.3f}"},
        ],
    }


def beacon(*, at: float, theta: float, delivery: float = 30.0) -> ClockSample:
    sample = beacon_sample(at, theta + delivery)
    assert sample is not None
    return sample


def samples_of(*turns: dict) -> list[ClockSample]:
    return [s for s in map(server_timing_sample, turns) if s is not None]


def test_one_echo_bounds_the_skew_on_both_sides():
    sample = server_timing_sample(exchange(at=T, theta=250.0, up=30, down=10))
    assert sample is not None
    assert sample.lo == pytest.approx(250.0 - 10) and sample.hi == pytest.approx(250.0 + 30)


def test_a_request_held_in_a_server_queue_does_not_move_the_skew_of_its_session():
    """The demo's defect: 1.7 s in gunicorn's queue made one sample's NTP midpoint
    818 ms wrong. One quick round trip in the session pins it down."""
    theta = 0.0
    quick = exchange(at=T, theta=theta, up=8, down=8)
    slow = exchange(at=T + 60_000, theta=theta, up=8, queue=1500, down=8)
    alone = estimate_skew(slow, [])
    assert alone.ms == pytest.approx(750.0, abs=10)  # what one sample gave
    skew = estimate_skew(slow, samples_of(quick, slow))
    assert skew.source == "server_timing"
    assert abs(skew.ms - theta) <= 8 and skew.uncertainty_ms == pytest.approx(8.0)


@pytest.mark.parametrize(("up", "down"), [(900.0, 5.0), (5.0, 900.0)])
def test_one_sided_delays_on_either_leg_stay_inside_the_uncertainty(up, down):
    theta = -1234.5
    slow = exchange(at=T, theta=theta, up=up, down=down)
    quick = exchange(at=T + 5000, theta=theta, up=6, down=6)
    skew = estimate_skew(slow, samples_of(slow, quick))
    assert abs(skew.ms - theta) <= skew.uncertainty_ms <= 6


def test_a_browser_clock_minutes_off_is_corrected():
    theta = 5 * 60_000.0  # the browser is five minutes slow
    turns = [exchange(at=T + i * 30_000, theta=theta, up=15 + i, down=25 - i) for i in range(5)]
    skew = estimate_skew(turns[0], samples_of(*turns))
    assert skew.ms == pytest.approx(theta, abs=15)


def test_beacons_tighten_the_upper_bound_of_echoes():
    theta = 40.0
    slow = exchange(at=T, theta=theta, up=400, down=5)  # θ in [35, 440]
    skew = estimate_skew(slow, [beacon(at=T + 1000, theta=theta, delivery=12)])  # θ <= 52
    assert (skew.ms, skew.uncertainty_ms) == pytest.approx((43.5, 8.5))


def test_a_clock_changed_mid_session_keeps_each_turn_with_its_own_samples():
    """The user set the browser clock 10 minutes forward between two pairs of turns:
    the intervals no longer intersect, and each turn keeps the ones that agree with
    its own sample."""
    before, after = 100.0, 100.0 - 600_000.0
    early = [exchange(at=T, theta=before, up=10, down=30), exchange(at=T + 60_000, theta=before)]
    late = [
        exchange(at=T + 120_000, theta=after, up=25, down=25),
        exchange(at=T + 180_000, theta=after, up=5, down=45),
    ]
    samples = samples_of(*early, *late)
    assert estimate_skew(early[0], samples).ms == pytest.approx(before, abs=20)
    assert estimate_skew(late[1], samples).ms == pytest.approx(after, abs=20)


def test_a_turn_without_an_echo_takes_the_samples_nearest_in_time_when_they_disagree():
    before, after = 0.0, -600_000.0
    samples = samples_of(exchange(at=T, theta=before), exchange(at=T + 600_000, theta=after))
    no_echo = {"t_send": T + 590_000, "t_headers": T + 590_100}
    assert estimate_skew(no_echo, samples).ms == pytest.approx(after, abs=20)


def test_beacons_alone_give_the_fastest_delivery_as_an_upper_bound():
    theta = -2500.0
    beacons = [beacon(at=T + i * 1000, theta=theta, delivery=d) for i, d in enumerate([80, 9, 40])]
    skew = estimate_skew({"t_send": T}, beacons)
    assert skew == Skew(theta + 9, "beacon", None)


def test_samples_more_than_an_hour_away_are_not_used():
    far = exchange(at=T + 2 * 3600_000, theta=999.0, up=1, down=1)
    skew = estimate_skew({"t_send": T}, [*samples_of(far), beacon(at=T, theta=5.0, delivery=10)])
    assert skew == Skew(15.0, "beacon", None)


def test_nothing_at_all_is_no_skew():
    assert estimate_skew({"t_send": T}, []) == Skew(0.0, "none", None)


@pytest.mark.parametrize(
    "turn",
    [
        {"t_send": T, "t_headers": T - 5, "server_timing": exchange(at=T, theta=0)["server_timing"]},
        {"t_send": T, "t_headers": T + 100, "server_timing": [{"name": "llmrum-now"}]},
        {"t_send": T, "t_headers": T + 100, "server_timing": [
            {"name": "llmrum-now", "description": "soon"}]},
        {"t_send": T, "t_headers": T + 100, "server_timing": [
            {"name": "llmrum-now", "description": f"{T + 2 * 86_400_000}"}]},
        {"t_send": "x", "t_headers": T, "server_timing": []},
    ],
)  # fmt: skip
def test_an_echo_that_cannot_be_read_is_no_sample(turn):
    assert server_timing_sample(turn) is None


def test_beacon_samples_outside_a_day_or_not_finite_are_dropped():
    assert beacon_sample(T, 2 * 86_400_000.0) is None
    assert beacon_sample(T, math.nan) is None


def test_tightening_keeps_the_uncertainty_and_says_it_moved():
    skew = Skew(0.0, "server_timing", 12.0)
    tightened = tighten(
        skew, t_send=T, t_end=T + 1000, outcome="completed", gateway=(T + 2000, T + 2500)
    )
    assert tightened.source == "server_timing+tightened"
    assert tightened.uncertainty_ms == 12.0
    assert T + tightened.ms <= T + 2000 and T + 1000 + tightened.ms >= T + 2500


def test_tightening_moves_the_skew_only_as_far_as_the_gateway_span_needs():
    """The held request: its gateway span starts 1.5 s into the browser span and ends
    2 ms after it (the server closed its span after the last byte). Centring the
    gateway would move the browser span by 750 ms; the nearest skew that contains it
    is 2 ms away, and inside what the samples allow."""
    skew = Skew(1.8, "server_timing", 6.8)
    tightened = tighten(
        skew, t_send=T, t_end=T + 3000, outcome="completed", gateway=(T + 1505, T + 3004)
    )
    assert tightened == Skew(4.0, "server_timing+tightened", 6.8)


def test_an_upper_bound_from_beacons_is_tightened_within_it():
    skew = Skew(80.0, "beacon", None)  # θ <= 80
    tightened = tighten(
        skew, t_send=T, t_end=T + 1000, outcome="stopped", gateway=(T + 30, T + 2000)
    )
    assert tightened == Skew(30.0, "beacon+tightened", None)  # start no later than the gateway


@pytest.mark.parametrize("skew", [Skew(0.0, "none"), Skew(0.0, "server_timing", 5.0)])
def test_without_samples_or_against_them_the_gateway_is_centred(skew):
    """No samples, or samples the spans contradict (θ in [-5, 5], but the gateway span
    starts 60 s after the browser sent): the Jaeger adjuster's symmetric latency."""
    tightened = tighten(
        skew, t_send=T, t_end=T + 1000, outcome="completed",
        gateway=(T + 60_100, T + 60_900),
    )  # fmt: skip
    assert tightened.ms == pytest.approx(60_000.0)  # 100 ms of latency each way
    assert tightened.source == f"{skew.source}+tightened"
