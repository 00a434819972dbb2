"""Debian's Chromium for the browser tests, launched the one way this machine
allows: headless, no sandbox (root), no GPU, no background networking (the
network is closed; Chromium's own connections would be refused)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def chromium_missing() -> bool:
    return not Path(CHROMIUM).exists()


@contextmanager
def launched_chromium(sync_api: Any) -> Iterator[Any]:
    """A Playwright browser on Debian's Chromium (never a downloaded one)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=15_000)
        try:
            yield browser
        finally:
            browser.close()


def new_context(browser: Any, **options: Any) -> Any:
    """A browser context that counts its requests in flight, for `close_quietly`."""
    context = browser.new_context(**options)
    in_flight: set[Any] = set()
    # Playwright calls plain functions only (not bound built-in methods like set.add).
    context.on("request", lambda request: in_flight.add(request))
    context.on("requestfinished", lambda request: in_flight.discard(request))
    context.on("requestfailed", lambda request: in_flight.discard(request))
    context.llmrum_in_flight = in_flight
    return context


def close_quietly(context: Any, timeout_s: float = 5.0) -> None:
    """Leave every page, wait until the beacons sent on leaving are answered, then close.

    A test's database is emptied (TRUNCATE) right after the test. A beacon the live
    server is still storing then holds a row lock that the TRUNCATE waits for while it
    holds what the beacon needs next, and PostgreSQL ends one of them as a deadlock;
    closing the context alone sends the leaving beacons and returns before they land."""
    pages = list(context.pages)
    for page in pages:
        try:
            page.goto("about:blank")
        except Exception:  # noqa: BLE001 - a crashed or closed page sends nothing more
            pass
    pump = pages[0] if pages else context.new_page()
    in_flight = getattr(context, "llmrum_in_flight", set())
    pump.wait_for_timeout(100)  # lets the leaving requests' events arrive
    deadline = time.monotonic() + timeout_s
    while in_flight and time.monotonic() < deadline:
        pump.wait_for_timeout(50)
    context.close()
