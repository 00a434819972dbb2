"""Rollups: the sketches' documented error, the window plan, and rollup answers
over days of stitched turns against the exact answer over the same turns."""

from __future__ import annotations

import math
import random
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from correlator.analytics import figures, rollups, windows
from correlator.analytics.sketches import HLL_REGISTERS, HyperLogLog, LogHistogram, max_bytes
from correlator.models import DirtyRollup, Rollup, Trace, Turn
from correlator.stitch.store import conversations_widen
from correlator.stitch.sweep import sweep_run
from rumserver.models import BrowserSession
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp


def nearest_rank(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_histogram_quantiles_are_within_one_percent(seed):
    rng = random.Random(seed)
    values = [rng.lognormvariate(6, 1.2) for _ in range(5000)] + [0.0] * 50
    whole, left, right = LogHistogram(), LogHistogram(), LogHistogram()
    for i, value in enumerate(values):
        whole.add(value)
        (left if i % 2 else right).add(value)
    left.merge_flat(right.to_flat())
    assert left.counts == whole.counts  # merging halves gives the whole
    for q in (0.01, 0.5, 0.75, 0.95, 0.99, 1.0):
        exact = nearest_rank(values, q)
        assert whole.quantile(q) == pytest.approx(exact, rel=0.01, abs=1e-9), q
    assert LogHistogram().quantile(0.5) is None


@pytest.mark.parametrize("n", [1, 7, 100, 1000, 50_000])
def test_hyperloglog_counts_within_its_error(n):
    one, other = HyperLogLog(), HyperLogLog()
    for i in range(n):
        (one if i % 3 else other).add(f"session-{i}")
        one.add(f"session-{i // 2}")  # repeats never count twice
    one.merge(other)
    estimate = one.estimate()
    if n <= HyperLogLog.EXACT_LIMIT:
        assert estimate == n
    else:
        assert estimate == pytest.approx(n, rel=3 * 0.023)  # three standard errors


def test_register_max_is_the_bytewise_max():
    rng = random.Random(4)
    for _ in range(50):
        a = bytes(rng.randrange(0, 60) for _ in range(2048))
        b = bytes(rng.choice([0, rng.randrange(0, 60)]) for _ in range(2048))
        assert max_bytes(a, b) == bytes(map(max, a, b))
    assert max_bytes(bytes(2048), bytes(2048)) == bytes(2048)


def test_window_plan_covers_the_window_once_with_the_fewest_rows():
    rng = random.Random(5)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    for _ in range(300):
        since = base + timedelta(seconds=rng.uniform(0, 40 * 86400))
        until = since + timedelta(seconds=rng.choice([30, 90, 3600 * 5.5, 86400 * 3.3, 86400 * 31]))
        ranges, raw = windows.window_plan(since, until)
        pieces = sorted([(lo, hi) for _, lo, hi in ranges] + raw)
        assert pieces[0][0] == since and pieces[-1][1] == until
        for (_, hi), (lo, _) in zip(pieces, pieces[1:], strict=False):
            assert hi == lo  # no gap, no overlap
        assert sum((hi - lo for lo, hi in raw), timedelta()) < timedelta(minutes=2)
        for period, lo, hi in ranges:
            assert rollups.floor(lo, period) == lo and rollups.floor(hi, period) == hi
        assert sum(p == "minute" for p, *_ in ranges) <= 2
    ranges, _ = windows.window_plan(
        base + timedelta(seconds=30), base + timedelta(days=30, seconds=30)
    )
    rows = sum(
        (hi - lo) // rollups.LENGTH[period] for period, lo, hi in ranges
    )  # days + hours + minutes read for 30 days
    assert rows <= 29 + 2 * 23 + 2 * 59


def test_window_plan_reads_a_stale_minute_raw_and_its_hour_and_day_from_below():
    base = datetime(2026, 11, 1, tzinfo=UTC)
    minute = base + timedelta(days=3, hours=5, minutes=17)
    stale = frozenset({("minute", minute), ("hour", minute.replace(minute=0)),
                       ("day", minute.replace(hour=0, minute=0))})  # fmt: skip
    since, until = base + timedelta(seconds=30), base + timedelta(days=10, seconds=30)
    ranges, raw = windows.window_plan(since, until, stale)
    pieces = sorted([(lo, hi) for _, lo, hi in ranges] + raw)
    assert pieces[0][0] == since and pieces[-1][1] == until
    for (_, hi), (lo, _) in zip(pieces, pieces[1:], strict=False):
        assert hi == lo
    assert (minute, minute + timedelta(minutes=1)) in raw
    for period, lo, hi in ranges:
        for stale_period, start in stale:
            assert not (period == stale_period and lo <= start < hi), (period, lo, hi)
    # The rest of that day still comes from its other hours, and of that hour from minutes.
    assert ("hour", minute.replace(hour=0, minute=0), minute.replace(minute=0)) in ranges
    assert ("minute", minute.replace(minute=0), minute) in ranges


@pytest.mark.django_db
def test_a_pending_rebuild_never_hides_turns(settings):
    """Turns written to a minute of a day whose rollups exist, marked but not rebuilt
    (the sweep waits for the minute to settle): the rolled-up answer counts them."""
    app = factories.make_app().application
    turns = _stitched_turns(app, count=300, days=3, rng=random.Random(4))
    _rebuild_all(app, turns)
    later = _stitched_turns(app, count=6, days=3, rng=random.Random(5), first=1000)
    rollups.rollups_mark(
        {(app.pk, "minute", rollups.minute_of(t.t_send_ms)) for t in later}, now=timezone.now()
    )
    rollups.rollups_refresh(now=timezone.now(), settle_seconds=30)  # not settled: kept
    assert DirtyRollup.objects.filter(period="minute").count() == len(
        {rollups.minute_of(t.t_send_ms) for t in later}
    )
    now = timezone.now()
    settings.LLMRUM_METRICS_EXACT_TURNS = 10**9
    exact = figures.window_metrics(app=app, since=now - timedelta(days=4), until=now)
    rolled = windows.window_figures(app_id=app.pk, since=now - timedelta(days=4), until=now)
    assert rolled["turns"] == exact["turns"] == 306
    _assert_close(rolled, exact)
    points = [(now - timedelta(days=4 - i), now - timedelta(days=3 - i)) for i in range(4)]
    series = windows.series_figures(app_id=app.pk, points=points)
    assert sum(point["turns"] for point in series) == 306


def _stitched_turns(
    app, *, count: int, days: int, rng: random.Random, first: int = 0
) -> list[Turn]:
    """Stitched turns written directly (the stitch itself has its own tests),
    spread over ``days``, several models, browsers and outcomes; numbered from
    ``first`` (ids, sessions and conversations)."""
    now = timezone.now()
    sessions = [
        BrowserSession.objects.create(
            app=app,
            session_id=f"s{first + i}",
            first_seen_at=now,
            last_seen_at=now,
            browser=rng.choice(["Chrome", "Firefox", "Safari"]),
            os=rng.choice(["Linux", "iOS"]),
            device_class=rng.choice(["desktop", "mobile"]),
        )  # fmt: skip
        for i in range(count // 4)
    ]
    start = (now - timedelta(days=days)).timestamp() * 1000
    turns = []
    for i in range(first, first + count):
        t_send = start + rng.uniform(0, days * 86_400_000 - 60_000)
        outcome = rng.choice(["completed"] * 7 + ["stopped", "abandoned", "error"])
        ttft = (
            None if outcome == "abandoned" and rng.random() < 0.5 else rng.lognormvariate(6.5, 0.6)
        )
        trace = Trace.objects.create(
            app=app, trace_id=f"{i:032x}", state="final", start_ms=t_send, end_ms=t_send + 5000,
            last_received_at=now, stitched_at=now, linked=rng.random() < 0.9,
        )  # fmt: skip
        turns.append(
            Turn(
                app=app,
                trace=trace,
                session=rng.choice(sessions),
                span_id=f"{i:016x}",
                conversation_id=f"c{first + i % (count // 3)}",
                t_send_ms=t_send,
                outcome=outcome,
                regenerate_of=f"{i - 1:016x}" if i and rng.random() < 0.1 else "",
                intent_correction=rng.random() < 0.05,
                client_ttft_ms=ttft,
                server_ttft_ms=ttft * 0.6 if ttft else None,
                queue_ms=rng.choice([0.0, 12.5, 80.0]),
                tbt_p50_ms=rng.uniform(20, 60),
                tpot_ms=rng.uniform(15, 40),
                input_tokens=rng.randint(10, 900),
                output_tokens=rng.randint(1, 400),
                model=rng.choice(["gpt-4o", "llama-3-70b", "claude-3"]),
            )  # fmt: skip
        )
    Turn.objects.bulk_create(turns)
    conversations_widen((t.app_id, t.conversation_id, t.t_send_ms) for t in turns)
    return turns


def _rebuild_all(app, turns) -> None:
    now = timezone.now()
    rollups.rollups_mark(
        {(app.pk, "minute", rollups.minute_of(t.t_send_ms)) for t in turns}, now=now
    )
    rollups.rollups_refresh(now=now)


def _assert_close(rolled: dict, exact: dict) -> None:
    for key in ("turns", "input_tokens", "output_tokens"):
        assert rolled[key] == exact[key], key
    for key in ("sessions", "conversations"):  # exact up to 64, then HyperLogLog
        n, m = exact[key], HLL_REGISTERS
        # four standard errors of linear counting (what the estimate is at these sizes):
        # 4.7 at 75, 9.3 at 147. The hashes are of database ids, which depend on what ran
        # before in the same database: three (3.5 at 75) are exceeded in 1 draw of 370.
        error = 4 * math.sqrt(m * (math.exp(n / m) - n / m - 1))
        assert abs(rolled[key] - n) <= max(1, error), key
    for name in ("client_ttft_ms", "server_ttft_ms", "queue_ms", "tbt_ms", "tpot_ms"):
        for q, value in exact[name].items():
            assert rolled[name][q] == pytest.approx(value, rel=0.01), (name, q)
    for rate, value in exact["rates"].items():
        assert rolled["rates"][rate] == pytest.approx(value), rate


@pytest.mark.django_db
def test_rollups_over_days_match_the_exact_answer(settings):
    app = factories.make_app().application
    rng = random.Random(11)
    turns = _stitched_turns(app, count=600, days=4, rng=rng)
    _rebuild_all(app, turns)
    assert not DirtyRollup.objects.exists()
    periods = set(Rollup.objects.values_list("period", flat=True))
    assert periods == {"minute", "hour", "day"}
    now = timezone.now()
    ranges = [
        (now - timedelta(days=5), now),
        (now - timedelta(days=2, hours=7, seconds=13), now - timedelta(hours=3, seconds=41)),
        (now - timedelta(hours=5), now - timedelta(hours=1)),
    ]
    for since, until in ranges:
        for group_by in (None, "model", "device"):
            settings.LLMRUM_METRICS_EXACT_TURNS = 10**9
            exact = figures.window_metrics(app=app, since=since, until=until, group_by=group_by)
            rolled = windows.window_figures(
                app_id=app.pk, since=since, until=until, group_by=group_by
            )
            _assert_close(rolled, exact)
            assert [g["key"] for g in rolled["groups"]] == [g["key"] for g in exact["groups"]]
            for r, e in zip(rolled["groups"], exact["groups"], strict=True):
                _assert_close(r, e)


@pytest.mark.django_db
def test_a_turn_that_moves_minute_leaves_its_old_minute(settings):
    """The stitch marks a trace's old and new minutes, so a clock-skew correction
    that moves a turn never leaves it counted twice."""
    app = factories.make_app().application
    turns = _stitched_turns(app, count=12, days=1, rng=random.Random(3))
    _rebuild_all(app, turns)
    moved = turns[0]
    old_minute = rollups.minute_of(moved.t_send_ms)
    new_t_send = moved.t_send_ms - 3_600_000
    Turn.objects.filter(pk=moved.pk).update(t_send_ms=new_t_send)
    Trace.objects.filter(pk=moved.trace_id).update(start_ms=new_t_send)
    now = timezone.now()
    rollups.rollups_mark(
        {(app.pk, "minute", old_minute), (app.pk, "minute", rollups.minute_of(new_t_send))}, now=now
    )
    rollups.rollups_refresh(now=now)
    total = Rollup.objects.filter(app=app, period="day", dimension="").values_list(
        "turns", flat=True
    )
    assert sum(total) == 12
    in_old = Rollup.objects.filter(app=app, period="minute", start=old_minute, dimension="")
    assert sum(in_old.values_list("turns", flat=True)) == sum(
        rollups.minute_of(t.t_send_ms) == old_minute for t in turns[1:]
    )


@pytest.mark.django_db
def test_series_and_breakdown_agree_with_the_window_answer(settings):
    """A chart's points and the overview's splits, from rollups, match the exact
    answer for each step and each split."""
    app = factories.make_app().application
    turns = _stitched_turns(app, count=300, days=3, rng=random.Random(8))
    _rebuild_all(app, turns)
    now = timezone.now()
    since, until = now - timedelta(days=3, minutes=7), now
    for step in (timedelta(hours=6), timedelta(days=1), timedelta(minutes=30)):
        settings.LLMRUM_METRICS_EXACT_TURNS = 0
        rolled = figures.window_series(app=app, since=since, until=until, step=step)
        settings.LLMRUM_METRICS_EXACT_TURNS = 10**9
        exact = figures.window_series(app=app, since=since, until=until, step=step)
        assert [(p["since"], p["until"]) for p in rolled] == [
            (p["since"], p["until"]) for p in exact
        ]
        assert rolled[0]["since"] == since and rolled[-1]["until"] == until
        assert sum(p["turns"] for p in rolled) == 300
        for r, e in zip(rolled, exact, strict=True):
            _assert_close(r, e)
            for point in (r, e):
                assert point["until"] - point["since"] <= step
    for threshold in (0, 10**9):
        settings.LLMRUM_METRICS_EXACT_TURNS = threshold
        both = figures.window_breakdown(
            app=app, since=since, until=until, group_bys=["model", "os"]
        )
        settings.LLMRUM_METRICS_EXACT_TURNS = 10**9
        for group_by, body in both.items():
            one = figures.window_metrics(app=app, since=since, until=until, group_by=group_by)
            _assert_close(body, one)
            assert [g["key"] for g in body["groups"]] == [g["key"] for g in one["groups"]]
            for b, o in zip(body["groups"], one["groups"], strict=True):
                _assert_close(b, o)


@pytest.mark.django_db
def test_propagation_health_counts_both_sides_by_cause(client):
    created = factories.make_app()
    key, token = created.application.public_key, created.ingest_token
    t0 = time.time() * 1000 - 600_000
    linked = [GoldenTurn(t0=t0 + i * 1000, session=f"s{i}") for i in range(3)]
    browser_only = GoldenTurn(t0=t0 + 5000, session="s9")
    server_only = GoldenTurn(t0=t0 + 7000, session="s8")
    for golden in linked:
        send_beacon(client, key, golden.beacon())
        send_otlp(client, token, golden.gateway_request())
    send_beacon(client, key, browser_only.beacon())
    send_otlp(client, token, server_only.gateway_request())
    sweep_run(now=timezone.now())
    truth = dict(
        Trace.objects.exclude(propagation="").values_list("propagation", "propagation_cause")
    )
    now = timezone.now()
    for since in (now - timedelta(hours=1), rollups.floor(now - timedelta(hours=1), "hour")):
        health = figures.propagation_health(app=created.application, since=since, until=now)
        assert health["turns"] == 4 and health["linked_turns"] == 3
        assert health["server_only_traces"] == 1
        assert health["unlinked_by_cause"] == {
            truth["no_server_spans"]: 1,
            truth["no_browser_root"]: 1,
        }
