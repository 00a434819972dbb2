"""The sessions index: an application's browser sessions, the most recently seen
first, each with its turns, conversations and abandoned turns, read by keyset from
the (app, last seen) index (no OFFSET, no COUNT)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from correlator import selectors
from correlator.epoch import datetime_of, epoch_us
from correlator.reports.format import DASH, when
from correlator.reports.forms import TimeRange
from rumserver.models import Application

PAGE_SIZE = 50


def fmt_duration(length: timedelta) -> str:
    """A session's length to the second: 45 s, 12 min 5 s, 3 h 20 min."""
    seconds = int(length.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def parse_cursor(text: str) -> tuple[datetime, int] | None:
    """``<last seen, µs since the epoch>_<id>`` of the previous page's last row:
    integers, so the page boundary is exact."""
    micros, _, pk = text.partition("_")
    try:
        return datetime_of(int(micros)), int(pk)
    except (ValueError, OverflowError):
        return None


def session_rows(
    *, app: Application, window: TimeRange, cursor: tuple[datetime, int] | None
) -> tuple[list[dict[str, Any]], str]:
    """One page of the sessions last seen in the window, and the cursor of the next
    page ("" at the end)."""
    page = selectors.session_list(
        app=app, since=window.since, until=window.until, before=cursor, limit=PAGE_SIZE + 1
    )
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    counts = selectors.session_counts(session_pks=[s.pk for s in page])
    rows = []
    for session in page:
        found = counts.get(session.pk)
        rows.append(
            {
                "session": session,
                "last_seen": when(session.last_seen_at),
                "turns": found.turns if found else 0,
                "conversations": found.conversations if found else 0,
                "abandoned": found.abandoned if found else 0,
                "duration": fmt_duration(session.last_seen_at - session.first_seen_at)
                if session.last_seen_at >= session.first_seen_at
                else DASH,
            }
        )
    next_cursor = ""
    if more and page:
        last = page[-1]
        next_cursor = f"{epoch_us(last.last_seen_at)}_{last.pk}"
    return rows, next_cursor
