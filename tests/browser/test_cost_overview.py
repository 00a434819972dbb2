"""The overview's cost figures in real headless Chromium on a 390 px wide phone: the
cost-by-model table fits without scrolling sideways, and a hostile model name is
shown as text."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from correlator.stitch.sweep import sweep_run
from rumserver.pricing import price_set
from tests import factories
from tests.browser.conftest import CHROMIUM
from tests.browser.test_reports import log_in, shot
from tests.browser.test_vitals_errors import no_horizontal_scroll
from tests.correlator.golden import send_beacon
from tests.correlator.test_cost import _turn
from tests.reports.conftest import XSS_IMG, make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def test_cost_by_model_fits_a_phone(browser: Any, live_server: Any, transactional_db: Any) -> None:
    created = factories.make_app("Priced")
    app = created.application
    long_name = "meta-llama/Llama-3.1-70B-Instruct-FP8-dynamic"
    for model in (long_name, XSS_IMG):
        price_set(slug=app.slug, model=model, input_usd="0.6", output_usd="2.4",
                  cached_input_usd=None, now=timezone.now() - timedelta(hours=1))  # fmt: skip
    t = factories.now_ms() - 120_000
    turns = [_turn(t + i * 1000, f"c{i % 3}", model=m)
             for i, m in enumerate([long_name, long_name, XSS_IMG, "no-price"])]  # fmt: skip
    send_beacon(Client(), app.public_key, factories.batch(turns, session={"id": "sess-phone"}))
    sweep_run(now=timezone.now(), finalize_all=True)
    make_user("pat", app=created)
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = phone.new_page()
        log_in(page, live_server.url, "pat", f"/reports/?app={app.slug}")
        table = page.locator("#cost")
        assert table.locator("tbody tr").count() == 3
        assert XSS_IMG in table.inner_text() and page.locator("img").count() == 0
        assert page.locator('[data-figure="cost_usd"] .value').inner_text().startswith("$")
        box = page.evaluate(
            "(() => { const t = document.querySelector('#cost');"
            " return [t.getBoundingClientRect().right, document.documentElement.clientWidth,"
            " t.parentElement.scrollWidth, t.parentElement.clientWidth]; })()"
        )
        assert box[0] <= box[1] and box[2] <= box[3], box  # no sideways scroll, page or table
        no_horizontal_scroll(page)
        page.locator("#cost").scroll_into_view_if_needed()
        shot(page, "overview-cost-390")
    finally:
        phone.close()
