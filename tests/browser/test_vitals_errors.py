"""The vitals and errors pages in real headless Chromium, fed by the real built SDK: a
chat page reports its Web Vitals and throws an error with a hostile message; the
beacons land, both pages show them (the error linked to its session), nothing the
browser sent runs, and both pages fit a 390 px wide phone. Screenshots go to
tests/artifacts/ with the other report pages'."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rumserver.models import BrowserSession
from tests import factories
from tests.browser.conftest import CHROMIUM, PageServer
from tests.browser.test_reports import log_in, shot
from tests.browser.test_sdk_page import CONTENT, sdk_page, stored
from tests.chromium import close_quietly, new_context
from tests.reports.conftest import XSS_IMG, make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"needs Chromium at {CHROMIUM}"),
]


@pytest.fixture
def created(live_server: Any, page_server: PageServer, transactional_db: Any) -> Any:
    return factories.make_app("Shop", origins=[page_server.origin])


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A browser context that records dialogs and page errors (there must be none on
    the report pages)."""
    context = new_context(browser, viewport={"width": 1440, "height": 1000})
    context.dialogs = []
    context.on("dialog", lambda dialog: (context.dialogs.append(dialog.message), dialog.dismiss()))
    yield context
    close_quietly(context)


def report_the_vitals_and_an_error(context: Any, page_server: PageServer, live_url: str,
                                   app: Any) -> str:  # fmt: skip
    """Open a chat page with the SDK at /checkout, throw, leave (LCP and CLS are
    reported then); the stored session id."""
    thrower = f"<script>function pay() {{ throw new TypeError({XSS_IMG!r}); }}</script>"
    page_server.html["/checkout"] = sdk_page(live_url, app.public_key, body=CONTENT + thrower)
    page = context.new_page()
    page.goto(f"{page_server.origin}/checkout?order=42")
    page.evaluate("setTimeout(pay)")
    (error,) = stored(app, "error")
    assert XSS_IMG in error["message"] and error["stack"], error
    page.evaluate(
        """new Promise((resolve) => new PerformanceObserver(() => setTimeout(resolve, 50))
            .observe({type: 'largest-contentful-paint', buffered: true}))"""
    )
    page.goto(f"{page_server.origin}/elsewhere")
    names: set[str] = set()
    for _ in range(3):
        names = {v["name"] for v in stored(app, "vital", 4)}
        if {"FCP", "TTFB", "LCP"} <= names:
            break
    assert {"FCP", "TTFB", "LCP"} <= names, names
    page.close()
    return BrowserSession.objects.get(app=app).session_id


def no_horizontal_scroll(page: Any) -> None:
    widths = page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1], widths


def test_the_sdks_vitals_and_errors_appear_on_their_pages(
    context, browser, live_server, page_server, created
):
    app = created.application
    session_id = report_the_vitals_and_an_error(context, page_server, live_server.url, app)
    make_user("rita", app=created)
    page = context.new_page()
    page.on("pageerror", lambda error: context.dialogs.append(str(error)))
    log_in(page, live_server.url, "rita", f"/reports/vitals/?app={app.slug}")

    row = page.locator('#vitals-by-page tr[data-path="/checkout"]').first
    assert row.get_attribute("data-device") == "desktop"
    for name in ("LCP", "FCP", "TTFB"):
        assert row.locator(f'td[data-vital="{name}"]').inner_text().endswith(" ms"), name
        card = page.locator(f'.card[data-vital="{name}"] .value').inner_text()
        assert card.endswith(" ms"), (name, card)
    assert page.locator("svg.chart").count() == 5
    shot(page, "vitals")

    page.click("header nav >> text=Errors")
    page.wait_for_url(f"{live_server.url}/reports/errors/?app={app.slug}")
    group = page.locator("#error-groups tr.error-group").first
    assert XSS_IMG in group.locator(".message").inner_text()  # shown as text
    # The top frame is the page's function, at its URL without the query string.
    assert group.locator(".frame").inner_text().startswith(f"pay ({page_server.origin}/checkout:")
    assert group.locator("td.count").inner_text() == "1"
    assert group.locator("td.sessions").inner_text() == "1"
    assert page.locator("img").count() == 0 and context.dialogs == []
    shot(page, "errors")

    group.locator("td.links a").first.click()
    page.wait_for_url("**/reports/sessions/**")
    assert session_id in page.locator("main").inner_text()
    assert context.dialogs == []


def test_both_pages_fit_a_phone(browser, live_server, page_server, created):
    app = created.application
    make_user("pia", app=created)
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = phone.new_page()
        report_the_vitals_and_an_error(phone, page_server, live_server.url, app)
        log_in(page, live_server.url, "pia", f"/reports/vitals/?app={app.slug}")
        no_horizontal_scroll(page)
        shot(page, "vitals-390")
        page.goto(f"{live_server.url}/reports/errors/?app={app.slug}")
        assert page.locator("#error-groups tr.error-group").count() == 1
        no_horizontal_scroll(page)
        shot(page, "errors-390")
    finally:
        phone.close()
