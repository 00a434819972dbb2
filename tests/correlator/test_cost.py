"""Cost (DESIGN.md §10.6): each turn at its model's price in force at its send time,
fixed at stitch; the metrics answer's ``cost_usd`` and ``cost_unpriced_turns`` from
the exact path and from rollups; the overview's cost figures; ``rumapp price``."""

from __future__ import annotations

import random
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.db.models import F
from django.test import Client
from django.utils import timezone
from rest_framework.authtoken.models import Token

from correlator.analytics import figures, rollups, windows
from correlator.models import DirtyRollup, Turn
from correlator.stitch.sweep import sweep_run
from rumserver.models import ModelPrice
from rumserver.pricing import price_set
from tests import factories
from tests.correlator.golden import send_beacon
from tests.correlator.test_rollups import _rebuild_all, _stitched_turns
from tests.reports.conftest import make_user

pytestmark = pytest.mark.django_db

HOUR_MS = 3_600_000


def _at(ms: float) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _turn(t_send: float, conversation: str, **overrides: Any) -> dict[str, Any]:
    """A browser-only turn sent at ``t_send`` (epoch ms): 812 tokens in, 58 out."""
    event = factories.turn_event(conversation_id=conversation, **overrides)
    shift = t_send - event["t_send"]
    for key in ("ts", "t_send", "t_headers", "t_first_token", "t_last_token", "t_end"):
        event[key] += shift
    return event


def _send(client: Client, app: Any, turns: list[dict[str, Any]]) -> None:
    send_beacon(
        client, app.application.public_key, factories.batch(turns, session={"id": "sess-cost"})
    )
    sweep_run(now=timezone.now(), finalize_all=True)


def _cost(span_id: str) -> int | None:
    return Turn.objects.get(span_id=span_id).cost_nano_usd


def _rolled_and_exact(app: Any, since: datetime, until: datetime, group_by: str | None, settings):
    now = timezone.now()
    rollups.rollups_mark(
        {(app.pk, "minute", rollups.minute_of(ms))
         for ms in Turn.objects.filter(app=app).values_list("t_send_ms", flat=True)},
        now=now,
    )  # fmt: skip
    rollups.rollups_refresh(now=now)
    assert not DirtyRollup.objects.exists()
    settings.LLMRUM_METRICS_EXACT_TURNS = 10**9
    exact = figures.window_metrics(app=app, since=since, until=until, group_by=group_by)
    rolled = windows.window_figures(app_id=app.pk, since=since, until=until, group_by=group_by)
    return rolled, exact


def test_prices_changed_mid_range_apply_by_time(client, settings):
    created = factories.make_app("Cost")
    app = created.application
    t0 = factories.now_ms() - 3 * HOUR_MS
    # No price for the first hour, then 1 / 2 USD per million tokens, then 3 / 6.
    price_set(slug=app.slug, model="gpt-4o-mini", input_usd="1", output_usd="2",
              cached_input_usd=None, now=_at(t0 + HOUR_MS))  # fmt: skip
    price_set(slug=app.slug, model="gpt-4o-mini", input_usd="3", output_usd="6",
              cached_input_usd=None, now=_at(t0 + 2 * HOUR_MS))  # fmt: skip
    before = _turn(t0 + 0.5 * HOUR_MS, "c1")
    first = _turn(t0 + 1.5 * HOUR_MS, "c1")
    second = _turn(t0 + 2.5 * HOUR_MS, "c2")
    _send(client, created, [before, first, second])

    assert _cost(before["span_id"]) is None  # no price yet: unpriced
    assert _cost(first["span_id"]) == (812 * 1 + 58 * 2) * 1000  # nano-USD
    assert _cost(second["span_id"]) == (812 * 3 + 58 * 6) * 1000
    since, until = _at(t0 - 60_000), timezone.now() + timedelta(minutes=2)
    for group_by in (None, "model"):
        rolled, exact = _rolled_and_exact(app, since, until, group_by, settings)
        for answer in (rolled, exact):
            assert answer["cost_usd"] == pytest.approx(0.003712, abs=1e-12)
            assert answer["cost_unpriced_turns"] == 1
        if group_by:
            assert exact["groups"][0]["cost_usd"] == rolled["groups"][0]["cost_usd"]
    # Only the second price's window: one turn at the new price.
    api = client.get(
        "/api/v1/metrics",
        {"app": app.slug, "since": _at(t0 + 2 * HOUR_MS).isoformat(), "until": until.isoformat()},
        HTTP_AUTHORIZATION=f"Token {_token(created)}",
    ).json()
    assert api["cost_usd"] == pytest.approx(0.002784) and api["cost_unpriced_turns"] == 0


def _token(created: Any) -> str:
    """A read-API token of a member of the application."""
    return Token.objects.get_or_create(user=make_user("carol", app=created))[0].key


def test_an_unknown_model_costs_nothing_and_is_counted_unpriced(client, settings):
    created = factories.make_app("Cost")
    app = created.application
    price_set(slug=app.slug, model="gpt-4o-mini", input_usd="1", output_usd="2",
              cached_input_usd=None, now=timezone.now() - timedelta(hours=1))  # fmt: skip
    t = factories.now_ms() - 60_000
    known = _turn(t, "c1")
    unknown = _turn(t + 1000, "c1", model="home-made-7b")
    _send(client, created, [known, unknown])
    assert _cost(unknown["span_id"]) is None
    since, until = _at(t - 120_000), timezone.now() + timedelta(minutes=2)
    rolled, exact = _rolled_and_exact(app, since, until, "model", settings)
    for answer in (rolled, exact):
        assert answer["cost_usd"] == pytest.approx(0.000928)
        assert answer["cost_unpriced_turns"] == 1
        groups = {g["key"]: g for g in answer["groups"]}
        assert groups["home-made-7b"]["cost_usd"] == 0
        assert groups["home-made-7b"]["cost_unpriced_turns"] == 1
        assert groups["gpt-4o-mini"]["cost_unpriced_turns"] == 0


def test_cached_input_costs_the_cached_price_when_the_usage_says_so(client):
    created = factories.make_app("Cost")
    app = created.application
    price_set(slug=app.slug, model="claude-x", input_usd="3", output_usd="15",
              cached_input_usd="0.3", now=timezone.now() - timedelta(hours=1))  # fmt: skip
    # Anthropic reports cache reads besides input_tokens.
    turn = _turn(factories.now_ms() - 60_000, "c1", model="claude-x",
                 usage={"input_tokens": 100, "cache_read_input_tokens": 1000,
                        "output_tokens": 58})  # fmt: skip
    _send(client, created, [turn])
    assert _cost(turn["span_id"]) == round((100 * 3 + 1000 * 0.3 + 58 * 15) * 1000)


@pytest.mark.parametrize("group_by", [None, "model", "device"])
def test_exact_and_rollup_paths_give_the_same_cost(settings, group_by):
    app = factories.make_app("Cost").application
    turns = _stitched_turns(app, count=400, days=2, rng=random.Random(5))
    # Stitched costs as the stitch stores them; one model has no price.
    Turn.objects.filter(model="gpt-4o").update(
        cost_nano_usd=F("input_tokens") * 2500 + F("output_tokens") * 10000
    )
    Turn.objects.filter(model="claude-3").update(cost_nano_usd=F("input_tokens") * 333 + 7)
    _rebuild_all(app, turns)
    now = timezone.now()
    for since, until in [
        (now - timedelta(days=3), now),
        (now - timedelta(days=1, hours=5, seconds=17), now - timedelta(hours=2, seconds=3)),
    ]:
        settings.LLMRUM_METRICS_EXACT_TURNS = 10**9
        exact = figures.window_metrics(app=app, since=since, until=until, group_by=group_by)
        rolled = windows.window_figures(app_id=app.pk, since=since, until=until, group_by=group_by)
        assert exact["cost_unpriced_turns"] > 0 and exact["cost_usd"] > 0
        assert rolled["cost_usd"] == exact["cost_usd"]
        assert rolled["cost_unpriced_turns"] == exact["cost_unpriced_turns"]
        for r, e in zip(rolled["groups"], exact["groups"], strict=True):
            assert (r["key"], r["cost_usd"], r["cost_unpriced_turns"]) == (
                e["key"], e["cost_usd"], e["cost_unpriced_turns"],
            )  # fmt: skip


def test_the_overview_shows_cost_by_model_and_per_conversation(client):
    created = factories.make_app("Cost")
    app = created.application
    hostile = "<img src=x onerror=alert(1)>"
    price_set(slug=app.slug, model=hostile, input_usd="1000", output_usd="2000",
              cached_input_usd=None, now=timezone.now() - timedelta(hours=1))  # fmt: skip
    t = factories.now_ms() - 120_000
    _send(client, created, [_turn(t, "c1", model=hostile), _turn(t + 1000, "c2", model=hostile),
                            _turn(t + 2000, "c2", model="no-price")])  # fmt: skip
    viewer = Client()
    viewer.force_login(make_user("dave", app=created))
    html = viewer.get(f"/reports/?app={app.slug}").content.decode()
    # Two turns at (812 x 1000 + 58 x 2000) / 1e6 USD = 0.928 each, two conversations.
    assert '<span class="value">$1.86</span><span class="label">Cost</span>' in html
    assert '<span class="value">$0.93</span><span class="label">Cost per conversation' in html
    assert 'data-figure="cost_unpriced_turns"><span class="value">1</span>' in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html and "<img" not in html
    table = html[html.index('id="cost"') : html.index("</table>", html.index('id="cost"'))]
    assert '<td class="cost">$1.86</td><td class="per-conversation">$0.93</td>' in table
    assert '<td class="cost">$0.00</td><td class="per-conversation">$0.00</td>' in table
    assert '<td class="unpriced">1</td>' in table


# -- rumapp price ------------------------------------------------------------------


def rumapp(*args: str) -> str:
    out = StringIO()
    call_command("rumapp", *args, stdout=out)
    return out.getvalue()


def test_price_keeps_history_and_prices_lists_it():
    app = factories.make_app("Cost").application
    rumapp("price", app.slug, "gpt-4o", "--input", "2.5", "--output", "10")
    out = rumapp("price", app.slug, "gpt-4o", "--input", "2", "--output", "8",
                 "--cached-input", "1.25")  # fmt: skip
    assert "in force from" in out
    rows = list(ModelPrice.objects.filter(app=app).order_by("in_force_from"))
    assert [(r.input_usd_per_mtok, r.output_usd_per_mtok, r.cached_input_usd_per_mtok)
            for r in rows] == [(Decimal("2.5"), Decimal(10), None),
                               (Decimal(2), Decimal(8), Decimal("1.25"))]  # fmt: skip
    listed = rumapp("prices", app.slug).splitlines()
    assert listed[0].startswith("gpt-4o\tinput=2.000000\toutput=8.000000\tcached_input=1.250000")
    assert "cached_input=-" in listed[1]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["no-such-app", "m", "--input", "1", "--output", "1"], "no application with slug"),
        (["{app}", "m", "--input", "-1", "--output", "1"], "cannot be negative"),
        (["{app}", "m", "--input", "1", "--output", "1", "--cached-input", "-0.5"], "negative"),
        (["{app}", "m", "--input", "1,5", "--output", "1"], "not a number"),
        (["{app}", "m", "--input", "1", "--output", "nan"], "not a finite number"),
        (["{app}", "m", "--input", "inf", "--output", "1"], "not a finite number"),
        (["{app}", " ", "--input", "1", "--output", "1"], "the model"),
    ],
)
def test_price_errors_write_nothing(args, message):
    app = factories.make_app("Cost").application
    with pytest.raises(CommandError, match=message):
        rumapp("price", *[a.replace("{app}", app.slug) for a in args])
    assert not ModelPrice.objects.exists()


def test_a_bad_price_exits_non_zero_with_the_reason(tmp_path):
    done = subprocess.run(
        [sys.executable, "manage.py", "rumapp", "price", "any", "m", "--input", "x",
         "--output", "1"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "LLMRUM_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    assert done.returncode != 0
    assert "--input: not a number: 'x'" in done.stderr


def test_the_admin_adds_prices_from_now_and_never_edits_them():
    app = factories.make_app("Cost").application
    client = Client()
    client.force_login(User.objects.create_superuser("root", password="pw"))
    form = {"app": app.pk, "model": "gpt-4o", "input_usd_per_mtok": "2.5",
            "output_usd_per_mtok": "10", "cached_input_usd_per_mtok": ""}  # fmt: skip
    refused = client.post("/admin/rumserver/modelprice/add/", {**form, "output_usd_per_mtok": "-1"})
    assert refused.status_code == 200 and "A price cannot be negative." in refused.content.decode()
    assert not ModelPrice.objects.exists()
    before = timezone.now()
    assert client.post("/admin/rumserver/modelprice/add/", form).status_code == 302
    price = ModelPrice.objects.get()
    assert price.in_force_from >= before and price.cached_input_usd_per_mtok is None
    page = client.get(f"/admin/rumserver/modelprice/{price.pk}/change/").content.decode()
    assert 'name="input_usd_per_mtok"' not in page  # shown read-only
    client.post(
        f"/admin/rumserver/modelprice/{price.pk}/change/", {**form, "input_usd_per_mtok": "1"}
    )
    price.refresh_from_db()
    assert price.input_usd_per_mtok == Decimal("2.5")
