"""What a report page's query asks for, parsed: the application, the time range,
the trace list's filters and cursor. Each parser answers with what was wrong too, so
a page shows its default with the errors instead of failing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import Http404
from django.utils.dateparse import parse_datetime

from correlator import selectors
from correlator.models import Turn
from correlator.reports.format import when
from rumserver.models import Application, BrowserSession

User = AbstractBaseUser | AnonymousUser

# --- the application --------------------------------------------------------------


def choose_app(*, user: User, slug: str | None) -> tuple[list[Application], Application | None]:
    """The applications this user may see and the one the page is about: the one
    named, else the first. Naming one the user may not see is a 404, so a page never
    tells whether another team's application exists."""
    apps = list(selectors.visible_applications(user).order_by("name", "id")[:500])
    if slug:
        found = next((a for a in apps if a.slug == slug), None)
        if found is None:
            found = selectors.visible_applications(user).filter(slug=slug).first()
        if found is None:
            raise Http404("no such application among yours")
        return apps, found
    return apps, (apps[0] if apps else None)


# --- time ranges ------------------------------------------------------------------

PRESETS: dict[str, tuple[timedelta, timedelta]] = {
    # name: (length, chart step)
    "1h": (timedelta(hours=1), timedelta(minutes=5)),
    "24h": (timedelta(hours=24), timedelta(hours=1)),
    "7d": (timedelta(days=7), timedelta(hours=6)),
    "30d": (timedelta(days=30), timedelta(days=1)),
}
STEPS = [timedelta(minutes=m) for m in (1, 5, 15, 30, 60, 180, 360, 720, 1440, 10080)]
MAX_POINTS = 48
MAX_RANGE = timedelta(days=400)


@dataclass(frozen=True)
class TimeRange:
    since: datetime
    until: datetime
    preset: str  # "" for a custom since/until
    step: timedelta

    def query(self) -> dict[str, str]:
        """The query parameters that give this range back (for links)."""
        if self.preset:
            return {"range": self.preset}
        return {"since": self.since.isoformat(), "until": self.until.isoformat()}

    @property
    def label(self) -> str:
        if self.preset:
            return f"last {self.preset}"
        return f"{when(self.since)} – {when(self.until)}"


def parse_when(text: str) -> datetime | None:
    """ISO 8601 or an HTML ``datetime-local`` value; naive times are UTC."""
    try:
        value = parse_datetime(text.strip())
    except ValueError:
        return None
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def step_for(length: timedelta) -> timedelta:
    return next((s for s in STEPS if length / s <= MAX_POINTS), STEPS[-1])


def time_range(
    params: Mapping[str, str], *, now: datetime, default: str = "24h"
) -> tuple[TimeRange, list[str]]:
    """The range a page's query asks for, and what was wrong with it (the default
    range is used then). Preset ranges end at the end of the current minute, as the
    metrics API's default does."""
    errors: list[str] = []
    end_of_minute = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    since_text, until_text = params.get("since", ""), params.get("until", "")
    if since_text or until_text:
        since = parse_when(since_text) if since_text else None
        until = parse_when(until_text) if until_text else end_of_minute
        if since is None or until is None:
            errors.append("since and until must be dates and times, e.g. 2026-01-31T09:00")
        elif since >= until:
            errors.append("since must be before until")
        elif until - since > MAX_RANGE:
            errors.append(f"a range is at most {MAX_RANGE.days} days")
        else:
            return TimeRange(since, until, "", step_for(until - since)), errors
    preset = params.get("range") or default
    if preset not in PRESETS:
        errors.append(f"unknown range {preset!r}: one of {', '.join(PRESETS)}")
        preset = default
    length, step = PRESETS[preset]
    return TimeRange(end_of_minute - length, end_of_minute, preset, step), errors


# --- bots ----------------------------------------------------------------------------

BOTS = ("exclude", "include")


def bots_included(params: Mapping[str, str]) -> tuple[bool, list[str]]:
    """Whether the overview's headline figures count bot turns (``bots=include``); by
    default they do not: a crawler's visits are no user's wait."""
    value = params.get("bots", "") or "exclude"
    if value not in BOTS:
        return False, [f"unknown bots value {value[:64]!r}: include or exclude"]
    return value == "include", []


# --- the trace list's filters and cursor ------------------------------------------


@dataclass(frozen=True)
class TraceFilters:
    """DESIGN.md §10.5's filters, by the names the trace API gives them."""

    q: str = ""
    outcome: str = ""
    model: str = ""
    browser: str = ""
    os: str = ""
    device: str = ""
    min_client_ttft_ms: float | None = None
    score: str = ""
    attr: tuple[str, str] | None = None
    window: TimeRange | None = None

    def query(self) -> dict[str, str]:
        out = {
            "q": self.q,
            "outcome": self.outcome,
            "model": self.model,
            "browser": self.browser,
            "os": self.os,
            "device": self.device,
            "score": self.score,
            "attr": self.attr_text,
        }
        if self.min_client_ttft_ms is not None:
            out["min_client_ttft_ms"] = f"{self.min_client_ttft_ms:g}"
        if self.window is not None:
            out.update(self.window.query())
        return {k: v for k, v in out.items() if v}

    @property
    def attr_text(self) -> str:
        return f"{self.attr[0]}:{self.attr[1]}" if self.attr else ""

    def selector_kwargs(self) -> dict[str, Any]:
        """The filters as ``selectors.trace_list`` takes them (None: not filtered)."""
        return {
            "q": self.q or None,
            "outcome": self.outcome or None,
            "model": self.model or None,
            "browser": self.browser or None,
            "os": self.os or None,
            "device": self.device or None,
            "min_client_ttft_ms": self.min_client_ttft_ms,
            "score": self.score or None,
            "attr": self.attr,
            "since": self.window.since if self.window else None,
            "until": self.window.until if self.window else None,
        }


def _text(params: Mapping[str, str], name: str, limit: int) -> str:
    return params.get(name, "").strip()[:limit]


def trace_filters(params: Mapping[str, str], *, now: datetime) -> tuple[TraceFilters, list[str]]:
    errors: list[str] = []
    outcome = params.get("outcome", "")
    if outcome and outcome not in Turn.OUTCOMES:
        errors.append(f"unknown outcome {outcome!r}")
        outcome = ""
    device = params.get("device", "")
    if device and device not in BrowserSession.Device.values:
        errors.append(
            f"unknown device class {device!r}: one of {', '.join(BrowserSession.Device.values)}"
        )
        device = ""
    min_ttft = None
    # min_ttft: the name this page used before the API's (old links keep working).
    threshold = params.get("min_client_ttft_ms") or params.get("min_ttft")
    if threshold:
        try:
            min_ttft = float(threshold)
            if not 0 <= min_ttft < math.inf:
                raise ValueError
        except ValueError:
            errors.append("slow TTFT threshold: a number of milliseconds")
            min_ttft = None
    attr = None
    attr_text = _text(params, "attr", 512)
    if attr_text:
        key, colon, value = attr_text.partition(":")
        if colon and key.strip():
            attr = (key.strip(), value)
        else:
            errors.append("span attribute: key:value, e.g. http.route:/api/chat")
    window = None
    if any(params.get(k) for k in ("range", "since", "until")):
        window, range_errors = time_range(params, now=now)
        errors += range_errors
    filters = TraceFilters(
        q=_text(params, "q", 128),
        outcome=outcome,
        model=_text(params, "model", 128),
        browser=_text(params, "browser", 64),
        os=_text(params, "os", 64),
        device=device,
        min_client_ttft_ms=min_ttft,
        score=_text(params, "score", 64),
        attr=attr,
        window=window,
    )
    return filters, errors


def trace_id_searched(filters: TraceFilters) -> str | None:
    """The trace id the search box holds exactly (32 hex digits), whose trace page the
    list redirects to; None for any other search."""
    q = filters.q.lower()
    return q if selectors.TRACE_ID.fullmatch(q) else None


def parse_cursor(text: str) -> tuple[float, int] | None:
    """``<start_ms>_<id>`` of the last row of the previous page (keyset paging: no
    OFFSET, no COUNT)."""
    start, _, pk = text.partition("_")
    try:
        return float(start), int(pk)
    except ValueError:
        return None
