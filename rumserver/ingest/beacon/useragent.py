"""User agent -> browser, OS, device class and bot flag (``user-agents`` package)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import user_agents


@dataclass(frozen=True)
class ParsedUserAgent:
    browser: str
    browser_version: str
    os: str
    os_version: str
    device_class: str
    is_bot: bool


# Parsing runs a few hundred regexes (~0.5 ms); real traffic repeats a few
# thousand distinct strings, so a bounded cache makes it nearly free.
@lru_cache(maxsize=4096)
def parse_user_agent(raw: str) -> ParsedUserAgent:
    ua = user_agents.parse(raw)
    if ua.is_bot:
        device = "bot"
    elif ua.is_tablet:
        device = "tablet"
    elif ua.is_mobile:
        device = "mobile"
    elif ua.is_pc:
        device = "desktop"
    else:
        device = "other"
    return ParsedUserAgent(
        browser=ua.browser.family[:64],
        browser_version=ua.browser.version_string[:32],
        os=ua.os.family[:64],
        os_version=ua.os.version_string[:32],
        device_class=device,
        is_bot=bool(ua.is_bot),
    )
