"""Debian's Chromium for the browser tests, launched the one way this machine
allows: headless, no sandbox (root), no GPU, no background networking (the
network is closed; Chromium's own connections would be refused)."""

from __future__ import annotations

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
