"""Bots left out of a window's totals and its series (the overview's default): the
rollup answer (device-class rows but the bot's, merged) against the exact answer
over the same turns, and the groups still holding the bots' turns."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from correlator.analytics import figures
from rumserver.models import BrowserSession
from tests import factories
from tests.correlator.test_rollups import _assert_close, _rebuild_all, _stitched_turns

pytestmark = pytest.mark.django_db


def _with_bots(count: int, seed: int):
    app = factories.make_app().application
    turns = _stitched_turns(app, count=count, days=2, rng=random.Random(seed))
    bots = BrowserSession.objects.filter(app=app).order_by("id")[::3]
    BrowserSession.objects.filter(pk__in=[s.pk for s in bots]).update(device_class="bot")
    bot_ids = {s.pk for s in bots}
    humans = [t for t in turns if t.session_id not in bot_ids]
    assert 0 < len(humans) < len(turns)
    _rebuild_all(app, turns)
    return app, turns, humans


def test_totals_without_bots_match_the_exact_answer_and_groups_keep_them(settings):
    app, turns, humans = _with_bots(400, 21)
    now = timezone.now()
    since, until = now - timedelta(days=2, minutes=3), now
    answers = {}
    for threshold in (0, 10**9):  # rollups, then exact
        settings.LLMRUM_METRICS_EXACT_TURNS = threshold
        answers[threshold] = figures.window_breakdown(
            app=app, since=since, until=until, group_bys=["model", "os"], bots=False
        )
        every = figures.window_breakdown(
            app=app, since=since, until=until, group_bys=["model"], bots=True
        )
        assert every["model"]["turns"] == len(turns)
    rolled, exact = answers[0], answers[10**9]
    assert rolled["model"]["percentiles"] == "sketch" and exact["model"]["percentiles"] == "exact"
    for group_by in ("model", "os"):
        assert exact[group_by]["turns"] == rolled[group_by]["turns"] == len(humans)
        _assert_close(rolled[group_by], exact[group_by])
        # The splits keep every turn: a model's row cannot leave bots out.
        assert sum(g["turns"] for g in rolled[group_by]["groups"]) == len(turns)
        assert sum(g["turns"] for g in exact[group_by]["groups"]) == len(turns)
    assert exact["model"]["sessions"] == len({t.session_id for t in humans})


def test_a_series_without_bots_matches_the_exact_answer(settings):
    app, turns, humans = _with_bots(300, 22)
    now = timezone.now()
    since, until = now - timedelta(days=2, minutes=7), now
    for step in (timedelta(hours=6), timedelta(minutes=30)):
        settings.LLMRUM_METRICS_EXACT_TURNS = 0
        rolled = figures.window_series(app=app, since=since, until=until, step=step, bots=False)
        settings.LLMRUM_METRICS_EXACT_TURNS = 10**9
        exact = figures.window_series(app=app, since=since, until=until, step=step, bots=False)
        assert sum(p["turns"] for p in rolled) == sum(p["turns"] for p in exact) == len(humans)
        for r, e in zip(rolled, exact, strict=True):
            _assert_close(r, e)
