"""The JavaScript errors page: the range's error events grouped by message and top
stack frame, each group with its count, the sessions it affected (linked), and when
it was first and last seen.

It reads the error reports' rollups (``analytics.event_rollups``) of the range, and
the raw reports of its partial edge minutes: every error of the range counts,
whatever their number. Counts and first and last seen are exact; the sessions
affected are counted exactly up to 64 a group, then within about 2.3 % (a
HyperLogLog). Bot sessions' errors are left out unless asked for. Messages and
stacks are hostile text from browsers: they are only ever placed by the template,
which escapes them."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

from correlator.analytics.event_rollups import (
    ERROR,
    EventAccumulator,
    session_values,
    top_frame,
    window_events,
)
from correlator.epoch import datetime_of
from correlator.reports.format import when
from correlator.reports.forms import TimeRange
from rumserver.models import Application

__all__ = ["top_frame"]  # how an error is grouped: the tests name it here

GROUP_LIMIT = 100  # groups shown, the most frequent first


@dataclass
class ErrorGroup:
    message: str
    frame: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    session_count: int = 0
    # the latest sessions first: (session pk, its browser session id)
    session_links: list[tuple[int, str]] = field(default_factory=list)

    @property
    def more_sessions(self) -> int:
        return max(0, self.session_count - len(self.session_links))

    @property
    def first_seen_text(self) -> str:
        return when(self.first_seen)

    @property
    def last_seen_text(self) -> str:
        return when(self.last_seen)


def error_groups(*, app: Application, window: TimeRange, bots: bool = False) -> list[ErrorGroup]:
    """The range's errors grouped by (message, top frame), the most frequent groups
    first, then the latest seen, with the sessions they link to named."""
    found = window_events(
        app_id=app.pk, kind=ERROR, points=[(window.since, window.until)], bots=bots
    )
    merged: dict[tuple[str, str], EventAccumulator] = defaultdict(EventAccumulator)
    for (_, message, frame, _), acc in found.items():  # each device class's
        merged[(message, frame)].merge_accumulator(acc)
    return name_linked_sessions(group_errors(merged))


def group_errors(merged: dict[tuple[str, str], EventAccumulator]) -> list[ErrorGroup]:
    """(message, top frame) -> its errors as groups, the most frequent first, then
    the latest seen, then by message and frame; at most ``GROUP_LIMIT``."""
    ordered = sorted(
        merged.items(), key=lambda item: (-item[1].count, -(item[1].last_us or 0), item[0])
    )
    return [
        ErrorGroup(
            message,
            frame,
            count=acc.count,
            first_seen=datetime_of(acc.first_us) if acc.first_us is not None else None,
            last_seen=datetime_of(acc.last_us) if acc.last_us is not None else None,
            session_count=max(acc.sessions.estimate(), len(acc.latest_sessions())),
            session_links=[(pk, "") for pk, _ in acc.latest_sessions()],
        )
        for (message, frame), acc in ordered[:GROUP_LIMIT]
    ]


def name_linked_sessions(groups: list[ErrorGroup]) -> list[ErrorGroup]:
    """Fill in the browser session ids of the sessions the groups link to (at most
    ``SESSION_LINKS`` a group), in one read by key: a page names a few hundred, where
    20,000 errors can come from 20,000 sessions."""
    names = session_values((pk for g in groups for pk, _ in g.session_links), "session_id")
    for group in groups:
        group.session_links = [(pk, names.get(pk, "")) for pk, _ in group.session_links]
    return groups
