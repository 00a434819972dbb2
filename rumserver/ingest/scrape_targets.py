"""``LLMRUM_SCRAPE_TARGETS``: comma-separated ``SLUG=URL`` pairs, read by settings
(no Django imports here) and checked at start-up, so a typo stops the process."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from rumserver.env import EnvError


@dataclass(frozen=True)
class ScrapeTarget:
    app_slug: str
    url: str


def parse_scrape_targets(items: list[str], *, setting: str) -> tuple[ScrapeTarget, ...]:
    targets = []
    for item in items:
        slug, sep, url = (part.strip() for part in item.partition("="))
        parts = urlsplit(url)
        if not sep or not slug or parts.scheme not in ("http", "https") or not parts.netloc:
            raise EnvError(f"{setting} wants SLUG=http(s)://host:port/metrics pairs, got {item!r}")
        targets.append(ScrapeTarget(app_slug=slug, url=url))
    return tuple(targets)
