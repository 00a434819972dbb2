"""Rollups of the vitals and errors pages: the browser's vital and error reports per
application and minute, by their receive time, merged upwards into hours and days as
the turns' rollups are (``analytics.rollups``), so a page over 30 days reads a few
thousand rows instead of every report.

A row is keyed by kind, name (a vital's metric, an error's message), place (a vital's
page path, an error's top stack frame) and the session's device class, and holds:
- a vital's: how many reports, and a ``LogHistogram`` of their values: p75 within
  1 % of the exact nearest rank (``analytics.sketches``), stored packed
  (``LogHistogram.to_packed``): a page adds thousands of rows' buckets as integers;
- an error's: how many, first and last seen (exact), a ``HyperLogLog`` of its sessions
  (exact up to 64, then within about 2.3 %), and its latest ``SESSION_LINKS``
  sessions with when each was last seen. A window's latest sessions are among its
  periods' latest: a session among the window's latest five has at most four later
  sessions in the period of its last error.

How they stay right, as the turns' rollups do: ingest marks dirty the minute a batch's
vitals and errors are received in and the minute a vital reported again leaves
(``DirtyEventRollup``, in the batch's own statement, ``rumserver.ingest.beacon.store``);
``event_rollups_refresh`` (each sweep, after the turns' rollups) claims settled minutes
with ``FOR UPDATE SKIP LOCKED`` and REBUILDS them from their events, then their hours
from the minutes, their days from the hours: a second rebuild writes the same rows.
Readers take whole periods from rows and the partial minutes at a window's edges, and
any period still waiting for a rebuild, from raw events (``windows.window_plan``).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import msgspec
from django.db import connection
from django.db.models import BigIntegerField, F, Field, Q, TextField
from django.db.models.expressions import Expression, RawSQL
from django.db.models.fields.json import KT
from django.db.models.functions import Cast

from correlator.analytics.rollups import (
    BATCH_SIZE,
    CHILD,
    LENGTH,
    MINUTE,
    floor,
    insert_rows,
    joined,
    rollups_refresh,
    untagged,
)
from correlator.analytics.sketches import HyperLogLog, LogHistogram, PackedHistogram, PackedHll
from correlator.analytics.windows import stale_periods, window_plan
from correlator.epoch import datetime_of, epoch_us
from correlator.models import EventRollup
from rumserver.models import BrowserEvent, BrowserSession, DirtyEventRollup

VITAL, ERROR = EventRollup.Kind.VITAL.value, EventRollup.Kind.ERROR.value
KINDS = (VITAL, ERROR)
BOT = BrowserSession.Device.BOT.value
SESSION_LINKS = 5  # sessions an error group links to, the latest first
# A vital's rows of every page path together (a path is never blank: ``page_path``):
# a chart over every page reads these, a tenth of the rows of each page's.
EVERY_PAGE = ""
_decode = msgspec.json.Decoder(dict).decode


# -- what a report is counted as ---------------------------------------------------------


@lru_cache(maxsize=4096)  # a page load reports up to five vitals from one URL
def page_path(url: str) -> str:
    """The path of a page URL, without its query and fragment (which carry ids and
    tokens, and would split one page into thousands)."""
    try:
        path = urlsplit(url).path
    except ValueError:
        return "(unparsable URL)"
    return path or "/"


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


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


class EventFact(NamedTuple):
    """One vital or error report as a rollup counts it."""

    kind: str
    at_us: int  # received, µs since the epoch
    name: str  # the vital's metric, the error's message
    place: str  # the vital's page path, the error's top frame
    device: str  # the session's device class
    value: float | None  # the vital's
    session_pk: int


def time_us(model: type[BrowserEvent] | type[EventRollup], column: str) -> Expression | F:
    """What to select for a time column: on PostgreSQL integer microseconds since the
    epoch (exact; parsing 20,000 timestamps as text was a fifth of a page); made an
    integer by ``_us`` on SQLite."""
    if connection.vendor != "postgresql":
        return F(column)
    return RawSQL(
        f'(extract(epoch FROM "{model._meta.db_table}"."{column}") * 1000000)::bigint',
        [],
        output_field=BigIntegerField(),
    )


def _us(value: int | datetime) -> int:
    return value if isinstance(value, int) else epoch_us(value)


def session_values(pks: Iterable[int], field: str) -> dict[int, Any]:
    """Session pk -> one field of it, for these sessions, by primary key in one
    query: each session probed once rather than once an event joined to it (a page
    load reports five vitals, a broken page throws the same error again and again);
    the join was half the read of 20,000 events."""
    wanted = sorted(set(pks))
    if not wanted:
        return {}
    if connection.vendor != "postgresql":
        return dict(BrowserSession.objects.filter(pk__in=wanted).values_list("pk", field))
    # One probe of the primary key a session (the LIMIT keeps the lateral from being
    # flattened into a join): as an IN list or a join, without statistics,
    # PostgreSQL read every session of the table.
    model_field = BrowserSession._meta.get_field(field)
    assert isinstance(model_field, Field)
    column = model_field.column
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT s.id, s.{column} FROM unnest(%s::bigint[]) AS k(id)
                CROSS JOIN LATERAL (
                    SELECT id, {column} FROM {BrowserSession._meta.db_table} WHERE id = k.id LIMIT 1
                ) AS s""",
            [wanted],
        )
        return dict(cursor.fetchall())


def event_facts(
    *, app_id: int, ranges: list[tuple[datetime, datetime]], kinds: Iterable[str] = KINDS
) -> list[EventFact]:
    """The vital and error reports received within these [from, to) ranges, through
    their own index (``event_vital_error_received``), with their sessions' device
    classes read by key."""
    if not ranges:
        return []
    within = Q()
    for lo, hi in ranges:
        within |= Q(received_at__gte=lo, received_at__lt=hi)
    rows = list(
        BrowserEvent.objects.filter(within, app_id=app_id, type__in=list(kinds)).values_list(
            "type",
            "name",
            KT("data__value"),
            KT("data__page_url"),
            KT("data__message"),
            KT("data__stack"),
            KT("data__source"),
            KT("data__lineno"),
            KT("data__colno"),
            time_us(BrowserEvent, "received_at"),
            "session_id",
        )
    )
    devices = session_values((row[-1] for row in rows), "device_class")
    facts = []
    for kind, name, value, url, message, stack, source, line, col, at, session in rows:
        device = devices.get(session, "")
        if kind == VITAL:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue
            facts.append(
                EventFact(VITAL, _us(at), name, page_path(url or ""), device, number, session)
            )
        else:
            frame = top_frame(stack, source, _int(line), _int(col))
            facts.append(EventFact(ERROR, _us(at), message or "", frame, device, None, session))
    return facts


# -- accumulating ------------------------------------------------------------------------


class EventAccumulator:
    """One (kind, name, place, device)'s reports over some periods: for vitals
    ``count`` and ``values``; for errors ``count``, first and last seen, ``sessions``
    and ``latest`` (session pk -> last seen µs). Slotted, its HyperLogLog made when
    first used: a page makes thousands of them."""

    __slots__ = ("_sessions", "count", "first_us", "last_us", "latest", "values")

    def __init__(self) -> None:
        self.count = 0
        self.values = LogHistogram()
        self.first_us: int | None = None
        self.last_us: int | None = None
        self._sessions: HyperLogLog | None = None
        self.latest: dict[int, int] = {}

    @property
    def sessions(self) -> HyperLogLog:
        if self._sessions is None:
            self._sessions = HyperLogLog()
        return self._sessions

    def add(self, fact: EventFact) -> None:
        self.count += 1
        if fact.value is not None:
            self.values.add(fact.value)
            return
        self._seen(fact.at_us, fact.at_us)
        self.sessions.add(str(fact.session_pk))
        if self.latest.get(fact.session_pk, -1) < fact.at_us:
            self.latest[fact.session_pk] = fact.at_us

    def _seen(self, first: int, last: int) -> None:
        self.first_us = first if self.first_us is None else min(self.first_us, first)
        self.last_us = last if self.last_us is None else max(self.last_us, last)

    def merge(self, count: int, sketch: dict[str, Any]) -> None:
        """Add a stored row (its ``count`` and decoded ``sketch``)."""
        self.count += count
        if "h" in sketch:
            self.values.merge_packed(PackedHistogram.from_stored(sketch["h"]))
            return
        self._seen(sketch["f"], sketch["t"])
        self.sessions.merge_packed(PackedHll(sketch["s"]))
        for pk, at in sketch["l"]:
            if self.latest.get(pk, -1) < at:
                self.latest[pk] = at

    def merge_accumulator(self, other: EventAccumulator) -> None:
        """Add another's reports (the same group on another device class)."""
        self.count += other.count
        self.values.merge(other.values)
        if other.first_us is not None and other.last_us is not None:
            self._seen(other.first_us, other.last_us)
        if other._sessions is not None:
            self.sessions.merge(other._sessions)
        for pk, at in other.latest.items():
            if self.latest.get(pk, -1) < at:
                self.latest[pk] = at

    def latest_sessions(self) -> list[tuple[int, int]]:
        """(session pk, last seen µs) of the latest ``SESSION_LINKS`` sessions, the
        latest first (then the higher pk: the newer session, at an equal time)."""
        ordered = sorted(self.latest.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        return ordered[:SESSION_LINKS]

    def sketch(self, kind: str) -> dict[str, Any]:
        if kind == VITAL:
            return {"h": self.values.to_packed()}
        return {
            "f": self.first_us,
            "t": self.last_us,
            "s": self.sessions.to_json(),
            "l": [list(pair) for pair in self.latest_sessions()],
        }


# (period start or point, kind, name, place, device)
Key = tuple[Any, str, str, str, str]


def _accumulate(facts: Iterable[EventFact], bucket: Any) -> dict[Key, EventAccumulator]:
    """Facts by (``bucket(fact)``, kind, name, place, device); a vital also under
    ``EVERY_PAGE``."""
    accs: dict[Key, EventAccumulator] = defaultdict(EventAccumulator)
    for fact in facts:
        at = bucket(fact)
        accs[(at, fact.kind, fact.name, fact.place, fact.device)].add(fact)
        if fact.kind == VITAL:
            accs[(at, VITAL, fact.name, EVERY_PAGE, fact.device)].add(fact)
    return accs


# -- rebuilding --------------------------------------------------------------------------


def event_periods_rebuild(
    *, app_id: int, period: str, starts: list[datetime], now: datetime
) -> None:
    """Replace these periods' rows: minutes from their reports (one read for the
    batch), longer periods from the rows of the period below."""
    ranges = untagged(joined([("", s, s + LENGTH[period]) for s in sorted(set(starts))]))
    if period == MINUTE:
        facts = event_facts(app_id=app_id, ranges=ranges)
        accs = _accumulate(facts, lambda fact: floor(datetime_of(fact.at_us), MINUTE))
    else:
        accs = defaultdict(EventAccumulator)
        for (start, kind, name, place, device), count, sketch in _stored(
            EventRollup.objects.filter(_covered(CHILD[period], ranges), app_id=app_id),
            stream=True,
        ):
            accs[(floor(datetime_of(start), period), kind, name, place, device)].merge(
                count, sketch
            )
    EventRollup.objects.filter(app_id=app_id, period=period, start__in=starts).delete()
    insert_rows(
        [
            EventRollup(
                app_id=app_id,
                period=period,
                start=start,
                kind=kind,
                name=name,
                place=place,
                device=device,
                count=acc.count,
                sketch=acc.sketch(kind),
                computed_at=now,
            )
            for (start, kind, name, place, device), acc in sorted(
                accs.items(), key=lambda item: item[0]
            )
        ]
    )


def _covered(period: str, ranges: Iterable[tuple[datetime, datetime]]) -> Q:
    covered = Q()
    for lo, hi in ranges:
        covered |= Q(period=period, start__gte=lo, start__lt=hi)
    return covered


def _stored(rows: Any, *, stream: bool = False) -> Iterable[tuple[Key, int, dict[str, Any]]]:
    """(key, count, sketch) of stored rows, the start as µs since the epoch and the
    sketch read as text and decoded by msgspec (as ``rollups.stored_rows``).
    ``stream``: through a server-side cursor (an hour's rebuild of a batch of 500
    reads every minute row of them); a page reads at once (a cursor's plan and round
    trips were a third of a page)."""
    found = rows.values_list(
        time_us(EventRollup, "start"),
        "kind",
        "name",
        "place",
        "device",
        "count",
        Cast("sketch", TextField()),
    )
    for start, kind, name, place, device, count, text in (
        found.iterator(chunk_size=5000) if stream else found
    ):
        yield (_us(start), kind, name, place, device), count, _decode(text)


def event_rollups_refresh(
    *, now: datetime, batch_size: int = BATCH_SIZE, settle_seconds: float = 0.0
) -> int:
    """Rebuild the dirty minutes of vital and error reports last marked at least
    ``settle_seconds`` ago, then every dirty hour, then day (``rollups_refresh``'s
    claims and order). Returns periods rebuilt."""
    return rollups_refresh(
        now=now,
        batch_size=batch_size,
        settle_seconds=settle_seconds,
        dirty=DirtyEventRollup,
        rebuild=event_periods_rebuild,
    )


# -- reading -----------------------------------------------------------------------------


def window_events(
    *,
    app_id: int,
    kind: str,
    points: list[tuple[datetime, datetime]],
    bots: bool = False,
    place: str | None = None,
) -> dict[tuple[int, str, str, str], EventAccumulator]:
    """(point index, name, place, device) -> the reports of ``kind`` received in each
    of these consecutive [from, to) points: each point from the fewest whole days,
    hours and minutes that cover it (``windows.window_plan``, one read for every
    point) and the raw reports of its partial edge minutes and of periods waiting for
    a rebuild. Without ``bots``, bot sessions' reports are left out. ``place``: only
    that page path's vitals, or with ``EVERY_PAGE`` every page's together; None: each
    place's (vitals' every-page rows left out)."""
    if not points:
        return {}
    stale = stale_periods(
        app_id=app_id, since=points[0][0], until=points[-1][1], dirty=DirtyEventRollup
    )
    ranges: list[tuple[str, datetime, datetime]] = []
    raw: list[tuple[datetime, datetime]] = []
    for lo, hi in points:
        whole, edges = window_plan(lo, hi, stale)
        ranges += whole
        raw += edges
    starts_us = [_us(lo) for lo, _ in points]
    accs: dict[tuple[int, str, str, str], EventAccumulator] = defaultdict(EventAccumulator)
    if ranges:
        covered = Q()
        for period, lo, hi in joined(sorted(ranges, key=lambda r: (r[1], r[0]))):
            covered |= _covered(period, [(lo, hi)])
        rows = EventRollup.objects.filter(covered, app_id=app_id, kind=kind)
        if place is not None:
            rows = rows.filter(place=place)
        elif kind == VITAL:
            rows = rows.exclude(place=EVERY_PAGE)
        if not bots:
            rows = rows.exclude(device=BOT)
        for (start, _, name, where, device), count, sketch in _stored(rows):
            accs[(bisect_right(starts_us, start) - 1, name, where, device)].merge(count, sketch)
    edges = untagged(joined(sorted(("", lo, hi) for lo, hi in raw)))
    for fact in event_facts(app_id=app_id, ranges=edges, kinds=[kind]):
        if (bots or fact.device != BOT) and place in (None, EVERY_PAGE, fact.place):
            at = bisect_right(starts_us, fact.at_us) - 1
            accs[(at, fact.name, fact.place if place is None else place, fact.device)].add(fact)
    return accs
