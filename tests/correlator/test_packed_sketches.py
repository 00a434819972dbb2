"""Stored rollup rows merged packed (``Accumulator.merge_packed``, what the overview and
the metrics API read through ``rollups.read_rows``) give exactly what merging their
JSON sketches gives, and a row a rebuild replaced is read again, not served from
this process's packed copy."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from correlator.analytics import rollups, windows
from correlator.analytics.exact import DURATIONS
from correlator.analytics.rollups import Accumulator, PackedRow
from correlator.analytics.sketches import HyperLogLog
from correlator.models import Rollup
from tests import factories


def _row(rng: random.Random, *, turns: int, sessions: int) -> Accumulator:
    """A stored row's accumulator: ``turns`` with durations over five decades (zeros
    and negatives in the zero bucket), ``sessions`` distinct ids of a shared pool."""
    acc = Accumulator()
    for name in acc.counts:
        acc.counts[name] = rng.randrange(1000)
    for name in DURATIONS:
        for _ in range(turns):
            value = rng.choice([0.0, -3.0, 5e-4, rng.lognormvariate(5, 2)])
            acc.histograms[name].add(value)
    for _ in range(sessions):
        acc.sessions.add(f"s{rng.randrange(400)}")
        acc.conversations.add(f"c{rng.randrange(60)}")
    if rng.random() < 0.5:
        acc.unlinked[rng.choice(["no_server_spans", "not_descending"])] = rng.randrange(1, 9)
    return acc


def _stored(acc: Accumulator) -> dict:
    row = acc.to_row(
        app_id=1, period="minute", start=timezone.now(), dimension="", key="", now=timezone.now()
    )
    return {"counts": [getattr(row, name) for name in rollups.COUNTS], "sketches": row.sketches}


@pytest.mark.parametrize("seed", range(8))
def test_packed_merging_gives_what_merging_the_json_gives(seed):
    """Exact distinct counts that stay exact (few ids) or overflow into registers
    (many, or a dense row among them), empty histograms, the zero bucket, raw turns
    added between merges: the figures and the row written are the same."""
    rng = random.Random(seed)
    rows = [
        _stored(_row(rng, turns=rng.choice([0, 1, 5, 200]), sessions=rng.choice([0, 3, 30, 300])))
        for _ in range(rng.randrange(1, 25))
    ]
    extra = [_row(rng, turns=3, sessions=rng.choice([1, 70]))]
    flat, packed = Accumulator(), Accumulator()
    for i, row in enumerate(rows):
        flat.merge(counts=row["counts"], sketches=row["sketches"])
        packed.merge_packed(counts=row["counts"], packed=PackedRow(row["sketches"]))
        if i == len(rows) // 2:  # the raw turns of an edge minute, added in between
            for acc in (flat, packed):
                acc.sessions.merge(extra[0].sessions)
                acc.histograms["tbt_ms"].merge(extra[0].histograms["tbt_ms"])
    assert packed.figures() == flat.figures()
    assert _stored(packed) == _stored(flat)


def test_a_few_sessions_stay_exact_and_many_overflow_as_merging_does():
    small, large = HyperLogLog(), HyperLogLog()
    for i in range(40):
        small.add(f"a{i % 30}")
        large.add(f"b{i}")
    for many in (False, True):
        flat, packed = HyperLogLog(), HyperLogLog()
        for sketch in (small, large) if many else (small,):
            flat.merge_json(sketch.to_json())
            packed.merge_packed(rollups.PackedHll(sketch.to_json()))
        packed.add("b1")  # one already merged: still one id
        flat.add("b1")
        assert packed.to_json() == flat.to_json()
        assert packed.estimate() == flat.estimate()
        assert ("d" in packed.to_json()) == many  # 70 ids overflow the exact 64
        assert many or packed.estimate() == 31


@pytest.mark.django_db
def test_a_rebuilt_row_is_read_again(settings):
    """The figures after a rebuild are the rebuilt row's, though this process packed
    the row it replaced (on PostgreSQL, where packed rows are kept by id)."""
    app = factories.make_app().application
    now = timezone.now().replace(second=0, microsecond=0)
    rng = random.Random(9)

    def store(acc: Accumulator, at) -> None:
        Rollup.objects.filter(app=app).delete()
        rollups.insert_rows(
            [
                acc.to_row(app_id=app.pk, period=p, start=s, dimension="", key="", now=at)
                for p, s in (("hour", now - timedelta(hours=2)),)
            ]
        )

    first, second = _row(rng, turns=50, sessions=10), _row(rng, turns=80, sessions=90)
    window = {"app_id": app.pk, "since": now - timedelta(hours=3), "until": now}
    store(first, timezone.now())
    assert windows.window_figures(**window)["client_ttft_ms"] == first.figures()["client_ttft_ms"]
    store(second, timezone.now())
    answer = windows.window_figures(**window)
    expected = second.figures()
    assert answer["client_ttft_ms"] == expected["client_ttft_ms"]
    assert answer["sessions"] == expected["sessions"]
    assert answer["turns"] == expected["turns"]
    if connection.vendor == "postgresql":
        assert len(rollups._packed) >= 1
