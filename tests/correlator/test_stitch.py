"""The sweep stitches browser, gateway and model spans into one trace per turn,
idempotently, whatever the order and however often the pieces arrive."""

from __future__ import annotations

import itertools
import threading
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connections
from django.test import Client
from django.utils import timezone

from correlator import selectors
from correlator.models import Restitch, Trace, Turn
from correlator.stitch import sweep
from correlator.stitch.store import conversations_widen
from correlator.stitch.sweep import sweep_run
from rumserver.models import DirtyTrace, Span
from rumserver.partitions import partitions_ensure
from tests import factories
from tests.correlator.golden import GoldenTurn, send_beacon, send_otlp


@pytest.fixture
def app(db):
    return factories.make_app()


def now_ms() -> float:
    return time.time() * 1000


def deliver(client: Client, app, golden: GoldenTurn, pieces: list[str]) -> None:
    for piece in pieces:
        if piece == "beacon":
            send_beacon(client, app.application.public_key, golden.beacon())
        elif piece == "gateway":
            send_otlp(client, app.ingest_token, golden.gateway_request())
        else:
            send_otlp(client, app.ingest_token, golden.model_request())


def snapshot(golden: GoldenTurn) -> dict:
    """The stitched result in terms that do not depend on ids or when it ran."""
    trace = Trace.objects.get(trace_id=golden.trace_id)
    turn = Turn.objects.get(trace=trace)
    spans = sorted(
        (
            s.role,
            s.name,
            round(s.start_ns / 1e6 - golden.t0, 3),
            round(s.end_ns / 1e6 - golden.t0, 3),
        )
        for s in selectors.trace_spans(trace)
    )
    fields = {f: getattr(turn, f) for f in (
        "outcome", "client_ttft_ms", "server_ttft_ms", "server_ttft_source", "model_ttft_ms",
        "queue_ms", "network_overhead_ms", "tbt_p50_ms", "tbt_p95_ms", "tbt_max_ms", "tpot_ms",
        "input_tokens", "output_tokens", "tokens_source", "model", "model_calls", "regenerated")}  # fmt: skip
    return {
        "linked": trace.linked,
        "skew": round(trace.clock_skew_ms, 3),
        "skew_source": trace.skew_source,
        "span_count": trace.span_count,
        "propagation": trace.propagation,
        "turn": fields,
        "spans": spans,
    }


def test_a_golden_turn_is_stitched_with_the_wait_split(client, app):
    golden = GoldenTurn(t0=now_ms() - 2000, server_timing=True)
    deliver(client, app, golden, ["beacon", "gateway", "model"])
    result = sweep_run(now=timezone.now())
    assert result.stitched == 1 and DirtyTrace.objects.count() == 0
    snap = snapshot(golden)
    assert snap["linked"] and snap["span_count"] == 4 and snap["propagation"] == ""
    assert snap["skew_source"] == "server_timing" and snap["skew"] == pytest.approx(10.0)
    turn = snap["turn"]
    assert turn["client_ttft_ms"] == pytest.approx(620)
    assert (turn["server_ttft_ms"], turn["server_ttft_source"]) == (
        pytest.approx(520), "event:first_token")  # fmt: skip
    assert turn["network_overhead_ms"] == pytest.approx(100)
    assert (turn["model_ttft_ms"], turn["queue_ms"]) == (pytest.approx(450), pytest.approx(30))
    assert (turn["tbt_p50_ms"], turn["tbt_p95_ms"], turn["tbt_max_ms"]) == (40, 41, 44)
    assert turn["tpot_ms"] == pytest.approx(40)
    assert (turn["input_tokens"], turn["output_tokens"], turn["tokens_source"]) == (
        812,
        30,
        "model",
    )
    assert (turn["model"], turn["model_calls"]) == ("meta-llama/Llama-3.1-8B", 1)
    roles = {name: role for role, name, *_ in snap["spans"]}
    assert roles == {"POST https://api.example.com/v1/chat/completions": "browser",
                     "POST /v1/chat/completions": "gateway", "chat llama-3.1-8b": "gateway",
                     "llm_request": "model"}  # fmt: skip
    trace = Trace.objects.get()
    assert trace.state == "open"  # data arrived just now; quiet period not over
    assert sweep_run(now=timezone.now() + timedelta(seconds=31)).finalized == 1
    assert Trace.objects.get().state == "final"


ORDERS = list(itertools.permutations(["beacon", "gateway", "model"]))


@pytest.mark.parametrize("sweep_between", [False, True], ids=["one-sweep", "sweep-each"])
def test_every_arrival_order_and_duplicate_gives_the_same_trace(client, app, sweep_between):
    snapshots = []
    for order in ORDERS:
        golden = GoldenTurn(t0=now_ms() - 2000, browser_offset_ms=-2000)
        pieces = [*order, order[0], order[2]]  # two pieces arrive twice
        for piece in pieces:
            deliver(client, app, golden, [piece])
            if sweep_between:
                sweep_run(now=timezone.now())
        sweep_run(now=timezone.now())
        sweep_run(now=timezone.now())  # running again changes nothing
        snapshots.append(snapshot(golden))
    first = snapshots[0]
    for snap in snapshots[1:]:
        # The beacon-based skew depends on real delivery time; everything else is exact.
        assert snap["skew"] == pytest.approx(first["skew"], abs=25)
        assert {k: v for k, v in snap.items() if k not in ("skew", "spans")} == {
            k: v for k, v in first.items() if k not in ("skew", "spans")
        }
    assert Trace.objects.count() == len(ORDERS) and Turn.objects.count() == len(ORDERS)


@pytest.mark.parametrize(
    "offset_ms", [-600_000, -2_000, 300, 300_000], ids=["-10min", "-2s", "+300ms", "+5min"]
)
@pytest.mark.parametrize("server_timing", [False, True], ids=["beacon", "server-timing"])
def test_browser_clock_errors_are_corrected_and_recorded(client, app, offset_ms, server_timing):
    golden = GoldenTurn(t0=now_ms() - 2000, browser_offset_ms=offset_ms,
                        server_timing=server_timing)  # fmt: skip
    deliver(client, app, golden, ["model", "gateway", "beacon"])
    sweep_run(now=timezone.now())
    trace = Trace.objects.get()
    # Server minus browser: a browser 5 min fast gives about -300000.
    assert trace.clock_skew_ms == pytest.approx(-offset_ms, abs=200)
    assert trace.skew_source.startswith("server_timing" if server_timing else "beacon")
    browser = Span.objects.get(role="browser")
    gateway = Span.objects.get(name="POST /v1/chat/completions")
    assert browser.start_ns <= gateway.start_ns and browser.end_ns >= gateway.end_ns
    assert Turn.objects.get().network_overhead_ms >= 0
    assert Span.objects.get(name="llm_request").start_ns == golden.server_ns(90)  # never moved


def test_a_stopped_turns_gateway_may_outlive_it(client, app):
    golden = GoldenTurn(t0=now_ms() - 2000, outcome="stopped", browser_offset_ms=400)
    deliver(client, app, golden, ["beacon", "gateway"])
    sweep_run(now=timezone.now())
    browser = Span.objects.get(role="browser")
    gateway = Span.objects.get(name="POST /v1/chat/completions")
    assert browser.start_ns <= gateway.start_ns and browser.end_ns < gateway.end_ns
    assert Turn.objects.get().outcome == "stopped"


def test_a_late_span_reopens_a_final_trace_and_refinalizes_it(client, app):
    golden = GoldenTurn(t0=now_ms() - 2000)
    deliver(client, app, golden, ["beacon", "gateway"])
    sweep_run(now=timezone.now(), finalize_all=True)
    assert Trace.objects.get().state == "final"
    assert Turn.objects.get().model_ttft_ms is None
    deliver(client, app, golden, ["model"])
    sweep_run(now=timezone.now())
    trace = Trace.objects.get()
    assert trace.state == "open" and trace.span_count == 4
    assert Turn.objects.get().model_ttft_ms == pytest.approx(450)
    sweep_run(now=timezone.now() + timedelta(seconds=60))
    assert Trace.objects.get().state == "final"


def test_a_regenerated_turn_is_marked_whichever_is_stitched_first(client, app):
    for first_stitched in ("original", "replacement", "together"):
        original = GoldenTurn(t0=now_ms() - 5000, session=f"s-{first_stitched}")
        replacement = GoldenTurn(t0=now_ms() - 2000, session=f"s-{first_stitched}",
                                 regenerate_of=original.browser_span)  # fmt: skip
        order = [original, replacement] if first_stitched == "original" else [replacement, original]
        for golden in order:
            send_beacon(client, app.application.public_key, golden.beacon())
            if first_stitched != "together":  # both in one batch
                sweep_run(now=timezone.now())
        sweep_run(now=timezone.now())
        assert Turn.objects.get(span_id=original.browser_span).regenerated is True
        new = Turn.objects.get(span_id=replacement.browser_span)
        assert (new.regenerated, new.regenerate_of) == (False, original.browser_span)


def test_one_sided_traces_are_kept_and_flagged(client, app):
    browser_only = GoldenTurn(t0=now_ms() - 2000)
    server_only = GoldenTurn(t0=now_ms() - 2000)
    deliver(client, app, browser_only, ["beacon"])
    deliver(client, app, server_only, ["gateway"])
    sweep_run(now=timezone.now())
    lonely = Trace.objects.get(trace_id=browser_only.trace_id)
    assert (lonely.linked, lonely.propagation) == (False, "no_server_spans")
    assert lonely.propagation_cause == "backend_not_instrumented_or_header_not_forwarded"
    orphan = Trace.objects.get(trace_id=server_only.trace_id)
    assert (orphan.linked, orphan.propagation) == (False, "no_browser_root")
    assert orphan.propagation_cause == "browser_beacon_missing"
    assert not Turn.objects.filter(trace=orphan).exists()


def test_a_stitch_marks_every_rollup_minute_its_rewrite_may_change(client, app):
    """Where the trace started before (here: a minute its old skew put it in), where
    it starts now, and where its conversation began (an earlier turn's minute)."""
    from django.db import transaction

    from correlator.analytics.rollups import minute_of
    from correlator.models import DirtyRollup

    golden = GoldenTurn(t0=now_ms() - 2000)
    deliver(client, app, golden, ["beacon", "gateway", "model"])
    sweep_run(now=timezone.now(), finalize_all=True)
    assert not DirtyRollup.objects.exists()
    trace = Trace.objects.get(trace_id=golden.trace_id)
    new_start = trace.start_ms
    old_start = new_start - 7 * 60_000
    Trace.objects.filter(pk=trace.pk).update(start_ms=old_start)
    opener = Turn.objects.get(trace=trace)
    opener_ms = new_start - 42 * 60_000
    other = Trace.objects.create(app=app.application, trace_id="e" * 32, start_ms=opener_ms,
                                 end_ms=opener_ms + 1, last_received_at=timezone.now(),
                                 stitched_at=timezone.now())  # fmt: skip
    Turn.objects.create(app=app.application, trace=other, session_id=opener.session_id,
                        span_id="f" * 16, conversation_id=opener.conversation_id,
                        t_send_ms=opener_ms, outcome="completed")  # fmt: skip
    # As the stitch of that turn would have: its conversation now began 42 minutes earlier.
    conversations_widen([(app.application.pk, opener.conversation_id, opener_ms)])
    now = timezone.now()
    with transaction.atomic():
        sweep.traces_stitch(keys=[(app.application.pk, golden.trace_id)], now=now)
    marked = set(DirtyRollup.objects.values_list("app_id", "period", "start", "last_marked_at"))
    assert marked == {
        (app.application.pk, "minute", minute_of(ms), now)
        for ms in (old_start, new_start, opener_ms)
    }
    assert Trace.objects.get(pk=trace.pk).start_ms == new_start


def test_the_stitch_command_finalizes_everything(client, app):
    from io import StringIO

    from django.core.management import call_command

    deliver(client, app, GoldenTurn(t0=now_ms() - 2000), ["beacon", "gateway", "model"])
    out = StringIO()
    call_command("stitch", "--finalize-all", stdout=out)
    assert "stitched 1 traces" in out.getvalue() and "finalized 1" in out.getvalue()
    assert Trace.objects.get().state == "final"


def backlog_counted(monkeypatch, traces: int) -> tuple[list[GoldenTurn], list[tuple[str, str]]]:
    """``traces`` whole turns ingested, and the (thread name, trace id) of every trace
    the sweep stitches from now on, each batch holding its claim a little so that
    concurrent sweeps really overlap."""
    created = factories.make_app()
    client = Client()
    goldens = [GoldenTurn(t0=now_ms() - 2000, session=f"s{i}") for i in range(traces)]
    for golden in goldens:
        deliver(client, created, golden, ["beacon", "gateway", "model"])
    stitched: list[tuple[str, str]] = []
    lock = threading.Lock()
    real = sweep.traces_stitch

    def counting(*, keys, now, windows=None):
        with lock:
            stitched.extend((threading.current_thread().name, trace_id) for _, trace_id in keys)
        time.sleep(0.01)
        real(keys=keys, now=now, windows=windows)

    monkeypatch.setattr(sweep, "traces_stitch", counting)
    return goldens, stitched


@pytest.mark.django_db(transaction=True)
def test_two_workers_sweeping_one_backlog_stitch_every_trace_exactly_once(monkeypatch):
    """On both databases: PostgreSQL's claims skip each other's locked rows, SQLite's
    take turns (IMMEDIATE transactions); either way no trace is stitched twice."""
    goldens, stitched = backlog_counted(monkeypatch, 60)
    barrier = threading.Barrier(2)

    def worker() -> None:
        barrier.wait()
        try:
            sweep_run(now=timezone.now(), batch_size=5)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(t for _, t in stitched) == sorted(g.trace_id for g in goldens)  # once each
    assert Trace.objects.count() == 60 and Turn.objects.count() == 60
    assert DirtyTrace.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_sweep_with_two_threads_stitches_every_trace_exactly_once(monkeypatch):
    goldens, stitched = backlog_counted(monkeypatch, 40)
    result = sweep_run(now=timezone.now(), batch_size=4, threads=2)
    assert result.stitched == 40
    assert sorted(t for _, t in stitched) == sorted(g.trace_id for g in goldens)  # once each
    assert len({name for name, _ in stitched}) == 2  # both threads took batches
    assert all(name.startswith("llmrum-sweep") for name, _ in stitched)
    assert Trace.objects.count() == 40 and Turn.objects.count() == 40
    assert DirtyTrace.objects.count() == 0
    # The threads closed their connections: only this thread's is left.
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        assert cursor.fetchone()[0] == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_backlog_of_one_batch_is_swept_on_the_callers_thread(monkeypatch):
    goldens, stitched = backlog_counted(monkeypatch, 3)
    assert sweep_run(now=timezone.now(), batch_size=10, threads=2).stitched == 3
    assert {name for name, _ in stitched} == {threading.current_thread().name}


def _aborted(sqlstate: str | None) -> Exception:
    """What Django raises when PostgreSQL aborts a statement (psycopg's error as cause)."""
    import psycopg.errors
    from django.db import OperationalError

    cause = (
        psycopg.errors.lookup(sqlstate)("deadlock detected")
        if sqlstate
        else psycopg.OperationalError("server closed the connection unexpectedly")
    )
    error = OperationalError(str(cause))
    error.__cause__ = cause
    return error


def test_a_batch_aborted_by_a_deadlock_is_stitched_again(client, app, monkeypatch, caplog):
    golden = GoldenTurn(t0=now_ms() - 2000)
    deliver(client, app, golden, ["beacon", "gateway", "model"])
    real, calls = sweep.traces_stitch, []

    def deadlocking_once(*, keys, now, windows=None):
        calls.append(keys)
        real(keys=keys, now=now, windows=windows)  # written, then rolled back with the batch
        if len(calls) == 1:
            raise _aborted("40P01")

    monkeypatch.setattr(sweep, "traces_stitch", deadlocking_once)
    result = sweep_run(now=timezone.now(), finalize_all=True)
    assert len(calls) == 2 and result.stitched == 1
    assert "deadlock detected" in caplog.text
    assert Trace.objects.count() == 1 and Turn.objects.count() == 1
    assert Span.objects.filter(role="browser").count() == 1
    assert not DirtyTrace.objects.exists()


def test_any_other_database_error_stops_the_sweep_with_nothing_half_written(client, app,
                                                                            monkeypatch):  # fmt: skip
    golden = GoldenTurn(t0=now_ms() - 2000)
    deliver(client, app, golden, ["beacon", "gateway", "model"])
    real = sweep.traces_stitch

    def failing(*, keys, now, windows=None):
        real(keys=keys, now=now, windows=windows)
        raise _aborted(None)

    monkeypatch.setattr(sweep, "traces_stitch", failing)
    with pytest.raises(Exception, match="server closed the connection"):
        sweep_run(now=timezone.now())
    assert not Trace.objects.exists() and not Turn.objects.exists()
    assert not Span.objects.filter(role="browser").exists()
    assert DirtyTrace.objects.filter(trace_id=golden.trace_id).exists()  # left for the next sweep


def _day_partitions_read(prefix: str) -> dict[date, int]:
    """Scans (sequential and index) of each day partition named ``prefix`` + YYYYMMDD
    in this transaction."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT relname, seq_scan + coalesce(idx_scan, 0) FROM pg_stat_xact_user_tables "
            "WHERE relname LIKE %s",
            [prefix + "%"],
        )
        rows = cursor.fetchall()
    return {
        date(int(name[-8:-4]), int(name[-4:-2]), int(name[-2:])): n
        for name, n in rows
        if name[len(prefix) :].isdigit()  # not the default partition
    }


@pytest.mark.postgres
def test_a_regeneration_looks_for_the_turn_it_replaces_near_its_send_first(client, app):
    """The turn a regeneration replaces is found by its raw turn event (the stitch's
    ``redo``), whose day partitions are by the browser's clock, the regenerating
    turn's too. With a month of day partitions: an answer regenerated minutes later
    is looked for in the days around the regeneration's send only, not in every day,
    and stitched again its turn moves (the regeneration's clock samples refine the
    skew) with its old row deleted from its own days only; one regenerated three days
    later is still found, and flagged."""
    today = datetime.now(UTC).date()
    partitions_ensure([today - timedelta(days=d) for d in range(35)])
    for age_days in (0, 3):
        original = GoldenTurn(
            t0=now_ms() - age_days * 86_400_000 - 600_000, session=f"s-{age_days}"
        )
        send_beacon(client, app.application.public_key, original.beacon())
        sweep_run(now=timezone.now())
        assert Turn.objects.get(span_id=original.browser_span).regenerated is False
        replacement = GoldenTurn(t0=now_ms() - 2000, session=f"s-{age_days}",
                                 regenerate_of=original.browser_span)  # fmt: skip
        send_beacon(client, app.application.public_key, replacement.beacon())
        tables = ("rumserver_browserevent_p", "correlator_turn_p")
        before = {table: _day_partitions_read(table) for table in tables}
        sweep_run(now=timezone.now())  # the regeneration; then the original, stitched again
        for table in tables if age_days == 0 else ():
            after = _day_partitions_read(table)
            read = {day for day, n in after.items() if n > before[table].get(day, 0)}
            assert read and min(read) >= today - timedelta(days=1), (table, sorted(read))
        assert Turn.objects.get(span_id=original.browser_span).regenerated is True


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_turn_regenerated_while_another_sweep_writes_it_is_still_marked(monkeypatch):
    """Sweep A has written the original turn and not committed yet when sweep B
    stitches its regeneration: B cannot see A's row to flag it, so it asks for the
    original's trace (found by its raw event) to be stitched again; after B commits,
    that request becomes a dirty trace (waiting for A's commit, holding nothing A
    needs), and the next batch stitches the original again, seeing the regeneration."""
    created = factories.make_app()
    client, key = Client(), created.application.public_key
    original = GoldenTurn(t0=now_ms() - 5000, session="s-race")
    replacement = GoldenTurn(t0=now_ms() - 2000, session="s-race",
                             regenerate_of=original.browser_span)  # fmt: skip
    send_beacon(client, key, original.beacon())
    send_beacon(client, key, replacement.beacon())
    written, release = threading.Event(), threading.Event()
    real = sweep.traces_stitch

    def pausing(*, keys, now, windows=None):
        real(keys=keys, now=now, windows=windows)
        if original.trace_id in {trace_id for _, trace_id in keys}:
            written.set()
            assert release.wait(10)

    monkeypatch.setattr(sweep, "traces_stitch", pausing)
    claimed: dict[str, int] = {}

    def sweep_one(name: str) -> None:
        try:  # one batch of one trace: the oldest mark not claimed by the other
            claimed[name] = sweep._sweep_batch(now=timezone.now(), batch_size=1)
        finally:
            connections.close_all()

    a = threading.Thread(target=sweep_one, args=("a",))
    a.start()
    assert written.wait(10)  # A holds the original, written, not committed
    b = threading.Thread(target=sweep_one, args=("b",))
    b.start()
    with connections["default"].cursor() as cursor:
        for _ in range(200):  # until B has finished, or waits (for the minute A marked)
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            if not b.is_alive() or cursor.fetchone()[0]:
                break
            time.sleep(0.02)
    release.set()
    a.join(10)
    b.join(10)
    assert claimed == {"a": 1, "b": 1}
    assert Restitch.objects.filter(trace_id=original.trace_id).exists()  # B's request
    sweep_run(now=timezone.now(), threads=1)
    assert Turn.objects.get(span_id=original.browser_span).regenerated is True
    assert Turn.objects.get(span_id=replacement.browser_span).regenerate_of == original.browser_span
    assert not DirtyTrace.objects.exists() and not Restitch.objects.exists()


def test_a_conversation_keeps_the_send_times_its_turns_span(client, app):
    """The stitch widens each conversation's span of send times with the turns it
    writes (correlator.models.Conversation), never narrows it, and the opening turns
    are read within it: the application's own, not another's with the same id."""
    from correlator.models import Conversation

    def span(created) -> tuple[float, float]:
        row = Conversation.objects.get(app=created.application, conversation_id="conv-golden")
        return row.first_send_ms, row.last_send_ms

    first = GoldenTurn(t0=now_ms() - 600_000, session="s-a")
    deliver(client, app, first, ["beacon", "gateway", "model"])
    sweep_run(now=timezone.now(), finalize_all=True)
    first_ms = Turn.objects.get(span_id=first.browser_span).t_send_ms
    assert span(app) == (first_ms, first_ms)
    later = GoldenTurn(t0=now_ms() - 2000, session="s-a")
    deliver(client, app, later, ["beacon", "gateway"])
    sweep_run(now=timezone.now(), finalize_all=True)
    later_ms = Turn.objects.get(span_id=later.browser_span).t_send_ms
    assert span(app) == (first_ms, later_ms) and first_ms < later_ms
    # Another application's conversation of the same id, begun earlier.
    other = factories.make_app("Other")
    theirs = GoldenTurn(t0=now_ms() - 1_200_000, session="s-b")
    deliver(client, other, theirs, ["beacon", "gateway"])
    sweep_run(now=timezone.now(), finalize_all=True)
    assert span(app) == (first_ms, later_ms)
    openers = selectors.conversation_openers(
        app_id=app.application.pk, conversations=["conv-golden", "never-seen"]
    )
    assert [row.span_id for row in openers["conv-golden"]] == [
        first.browser_span,
        later.browser_span,
    ]
    assert "never-seen" not in openers
    theirs_openers = selectors.conversation_openers(
        app_id=other.application.pk, conversations=["conv-golden"]
    )
    assert [row.span_id for row in theirs_openers["conv-golden"]] == [theirs.browser_span]
    # Widening only: a send time within the span changes nothing, an earlier one moves
    # its start, and a stitch of the same turns again leaves it as it is.
    key = (app.application.pk, "conv-golden")
    conversations_widen([(*key, first_ms + 1)])
    assert span(app) == (first_ms, later_ms)
    conversations_widen([(*key, first_ms - 60_000), (*key, first_ms - 30_000)])
    assert span(app) == (first_ms - 60_000, later_ms)
    sweep.traces_stitch(keys=[(app.application.pk, first.trace_id)], now=timezone.now())
    assert span(app) == (first_ms - 60_000, later_ms)
