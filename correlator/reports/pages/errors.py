"""The JavaScript errors page: the range's error events grouped by message and top
stack frame, each group with its count, the sessions it affected (linked), and when
it was first and last seen.

It reads the application's error events of the range through their own index
(``event_vital_error_received``), newest first and at most ``ROW_LIMIT`` of them.
Messages and stacks are hostile text from browsers: they are only ever placed by
the template, which escapes them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import NamedTuple

from django.db.models.fields.json import KT

from correlator.reports.format import cut_note, when
from correlator.reports.forms import TimeRange
from correlator.reports.pages.browser_events import range_events, received, session_values
from rumserver.models import Application, BrowserEvent

ROW_LIMIT = 20_000  # error events read for one page view, the newest (~0.3 s of reading)
GROUP_LIMIT = 100  # groups shown, the most frequent first
SESSION_LINKS = 5  # sessions linked per group, the latest first

# A stack line that names a place: Chrome's "    at fn (https://x/app.js:10:5)",
# Firefox's and Safari's "fn@https://x/app.js:10:5".
_FRAME = re.compile(r":\d+(?::\d+)?\)?$")
# A query string before the line number (a cache-busting "?v=3"): the same code.
_QUERY = re.compile(r"\?[^\s:()@]*(?=:\d)")


@lru_cache(maxsize=1024)  # one error thrown again and again has one stack
def top_frame(stack: str | None, source: str | None, lineno: int | None, colno: int | None) -> str:
    """The first frame of the stack that names a place, without its "at " and any
    query string; else where the error handler said it was thrown; else blank."""
    for line in (stack or "").splitlines():
        line = line.strip()
        if _FRAME.search(line) and (line.startswith("at ") or "@" in line or "(" not in line):
            return _QUERY.sub("", line.removeprefix("at ").strip())
    if source:
        place = ":".join(str(n) for n in (lineno, colno) if n is not None)
        return _QUERY.sub("", f"{source}:{place}" if place else source)
    return ""


class ErrorRow(NamedTuple):  # a tuple: 20,000 of them are made for one page view
    message: str
    frame: str
    received_at: datetime
    session_pk: int
    session_id: str


@dataclass
class ErrorGroup:
    message: str
    frame: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    # session pk -> its browser session id, the latest seen first (rows come newest first)
    sessions: dict[int, str] = field(default_factory=dict)

    @property
    def session_count(self) -> int:
        return len(self.sessions)

    @property
    def session_links(self) -> list[tuple[int, str]]:
        return list(self.sessions.items())[:SESSION_LINKS]

    @property
    def more_sessions(self) -> int:
        return max(0, len(self.sessions) - SESSION_LINKS)

    @property
    def first_seen_text(self) -> str:
        return when(self.first_seen)

    @property
    def last_seen_text(self) -> str:
        return when(self.last_seen)


def error_rows(*, app: Application, window: TimeRange) -> tuple[list[ErrorRow], str]:
    """The range's error events, newest first, and what ``ROW_LIMIT`` left out, when
    it did."""
    when, as_datetime = received()
    rows = list(
        range_events(app=app, type=BrowserEvent.Type.ERROR, window=window).values_list(
            KT("data__message"),
            KT("data__stack"),
            KT("data__source"),
            KT("data__lineno"),
            KT("data__colno"),
            when,
            "session_id",
        )[: ROW_LIMIT + 1]
    )
    out = [
        ErrorRow(
            message or "",
            top_frame(stack, source, _int(lineno), _int(colno)),
            as_datetime(received_at),
            session_pk,
            "",  # named for the linked sessions only (name_linked_sessions)
        )
        for message, stack, source, lineno, colno, received_at, session_pk in rows[:ROW_LIMIT]
    ]
    return out, cut_note(ROW_LIMIT, "errors") if len(rows) > ROW_LIMIT else ""


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def name_linked_sessions(groups: list[ErrorGroup]) -> list[ErrorGroup]:
    """Fill in the browser session ids of the sessions the groups link to (at most
    ``SESSION_LINKS`` a group), in one read by key: a page names a few hundred, where
    20,000 errors can come from 20,000 sessions."""
    wanted = [pk for g in groups for pk, name in g.session_links if not name]
    names = session_values(wanted, "session_id")
    for group in groups:
        for pk, name in group.session_links:
            if not name:
                group.sessions[pk] = names.get(pk, "")
    return groups


def group_errors(rows: list[ErrorRow]) -> list[ErrorGroup]:
    """Rows (newest first) grouped by (message, top frame), the most frequent groups
    first, then the latest seen."""
    groups: dict[tuple[str, str], ErrorGroup] = {}
    for row in rows:
        group = groups.setdefault((row.message, row.frame), ErrorGroup(row.message, row.frame))
        group.count += 1
        group.last_seen = max(group.last_seen or row.received_at, row.received_at)
        group.first_seen = min(group.first_seen or row.received_at, row.received_at)
        group.sessions.setdefault(row.session_pk, row.session_id)
    ordered = sorted(groups.values(), key=lambda g: (g.count, g.last_seen), reverse=True)
    return ordered[:GROUP_LIMIT]
