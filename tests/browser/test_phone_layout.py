"""Every report page on a 390 px wide phone in real headless Chromium: none scrolls
sideways and no navigation link is cut off (the navigation wraps, tables scroll
inside their own box, charts scale by their viewBox, the waterfall scrolls in its
box); nor does any at desktop width. A screenshot of each page at both widths is
kept in tests/artifacts/ (reports-all-*.png, ignored by git)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.test import Client

from rumserver.models import ApplicationMember, BrowserSession
from tests import factories
from tests.browser.conftest import CHROMIUM
from tests.browser.test_reports import log_in, nothing_ran, shot
from tests.reports.conftest import XSS_IMG, make_user
from tests.reports.test_vitals_errors import js_error, send, vital

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1440, "height": 1000}
LONG_PATH = "https://chat.example.com/" + "/".join(["a-rather-long-path-segment"] * 4)


def report_pages(stitched: Any, empty_slug: str) -> list[tuple[str, str]]:
    slug = stitched.app.application.slug
    session = BrowserSession.objects.get(session_id="sess-report")
    return [
        ("overview", f"/reports/?app={slug}"),
        ("overview-empty", f"/reports/?app={empty_slug}"),
        ("traces", f"/reports/traces?app={slug}"),
        ("traces-searched", f"/reports/traces?app={slug}&q=sess-report&outcome=stopped"),
        ("trace", f"/reports/traces/{stitched.golden.trace_id}?app={slug}"),
        ("trace-regenerated", f"/reports/traces/{stitched.stopped.trace_id}?app={slug}"),
        ("trace-hostile", f"/reports/traces/{stitched.xss.trace_id}?app={slug}"),
        ("trace-server-only", f"/reports/traces/{stitched.server_only}?app={slug}"),
        ("sessions", f"/reports/sessions/?app={slug}"),
        ("session", f"/reports/sessions/{session.pk}"),
        ("propagation", f"/reports/propagation?app={slug}"),
        ("vitals", f"/reports/vitals/?app={slug}"),
        ("errors", f"/reports/errors/?app={slug}"),
        ("model-servers", f"/reports/model-servers/?app={slug}"),
        ("alerts", f"/reports/alerts/?app={slug}"),
    ]


def too_wide(page: Any) -> list[str]:
    """What sticks out sideways: the page itself, or a navigation link past the screen's
    right edge (a cut-off menu)."""
    return page.evaluate(
        """() => {
          const width = document.documentElement.clientWidth, out = [];
          if (document.documentElement.scrollWidth > width)
            out.push(`page ${document.documentElement.scrollWidth} px`);
          for (const a of document.querySelectorAll("header nav a"))
            if (a.getBoundingClientRect().right > width) out.push(`nav ${a.textContent}`);
          return out;
        }"""
    )


def test_every_report_page_fits_a_phone(browser, live_server, stitched):
    key = stitched.app.application.public_key
    long_message = "TypeError: " + "a-message-without-any-spaces-" * 8 + XSS_IMG
    send(Client(), key, [vital("LCP", 2600), vital("CLS", 0.3), js_error(long_message, None)],
         session="sess-report", url=LONG_PATH)  # fmt: skip
    empty = factories.make_app("Nothing yet")
    pia = make_user("pia", app=stitched.app)
    ApplicationMember.objects.create(application=empty.application, user=pia)
    pages = report_pages(stitched, empty.application.slug)
    wide: list[str] = []
    for suffix, viewport in (("-390", PHONE), ("", DESKTOP)):
        context = browser.new_context(viewport=viewport)
        try:
            page = context.new_page()
            page.dialogs, page.errors = [], []
            page.on("pageerror", lambda error, page=page: page.errors.append(str(error)))
            page.goto(f"{live_server.url}/reports/")  # the login page first
            wide += [f"login{suffix}: {what}" for what in too_wide(page)]
            shot(page, f"all-login{suffix}")
            log_in(page, live_server.url, "pia")
            for name, path in pages:
                response = page.goto(f"{live_server.url}{path}")
                assert response.status == 200, (name, response.status)
                wide += [f"{name}{suffix}: {what}" for what in too_wide(page)]
                shot(page, f"all-{name}{suffix}")
            nothing_ran(page)
        finally:
            context.close()
    assert wide == [], wide
