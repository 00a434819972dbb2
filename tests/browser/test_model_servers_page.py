"""The model-server page in real headless Chromium: every server's charts on a 390 px
wide phone without sideways scrolling, a hostile service name shown as text and run
nowhere. Screenshots go to tests/artifacts/."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone

from tests import factories
from tests.browser.conftest import CHROMIUM
from tests.browser.test_reports import log_in, shot
from tests.browser.test_vitals_errors import no_horizontal_scroll
from tests.correlator.test_model_servers import DCGM, SUM, put
from tests.reports.conftest import XSS_IMG, make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


def a_busy_hour(app: Any) -> None:
    """An hour of 15 s samples of one vLLM server and its GPU, load rising then falling."""
    start = timezone.now().replace(second=0, microsecond=0) - timedelta(hours=1)
    tokens = 0.0
    for i in range(240):
        at = start + timedelta(seconds=15 * i)
        load = min(i, 240 - i) / 120  # 0 -> 1 -> 0
        tokens += 15 * (400 + 1600 * load)
        put(app, at, "vllm:num_requests_running", round(4 + 28 * load))
        put(app, at, "vllm:num_requests_waiting", round(max(0.0, load - 0.6) * 40))
        put(app, at, "vllm:kv_cache_usage_perc", 0.2 + 0.75 * load)
        put(app, at, "vllm:generation_tokens_total", tokens, kind=SUM)
        put(app, at, "vllm:num_preemptions_total", round(max(0.0, load - 0.8) * i), kind=SUM)
        put(app, at, "DCGM_FI_DEV_GPU_UTIL", 30 + 65 * load, instance=DCGM, service="dcgm")
    put(app, start + timedelta(minutes=5), "vllm:num_requests_running", 1, service=XSS_IMG,
        instance=XSS_IMG)  # fmt: skip


def test_the_page_fits_a_phone_and_runs_no_hostile_name(browser, live_server, transactional_db):
    created = factories.make_app("Served")
    a_busy_hour(created.application)
    make_user("vera", app=created)
    for name, viewport in (("", {"width": 1440, "height": 1000}), ("-390", {"width": 390, "height": 844})):  # fmt: skip
        context = browser.new_context(viewport=viewport)
        dialogs: list[str] = []
        context.on("dialog", lambda d, seen=dialogs: (seen.append(d.message), d.dismiss()))
        try:
            page = context.new_page()
            path = f"/reports/model-servers/?app={created.application.slug}&range=1h"
            log_in(page, live_server.url, "vera", path)
            assert page.locator("section.model-server").count() == 3
            assert XSS_IMG in page.locator("main").inner_text()
            assert page.locator("main img").count() == 0 and dialogs == []
            # TTFT, then only the charts each server has data for: 1, 1 and 4.
            assert page.locator("svg.chart").count() == 1 + 1 + 1 + 4
            if name:
                no_horizontal_scroll(page)
            shot(page, f"model-servers{name}")
        finally:
            context.close()
