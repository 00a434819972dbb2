"""Every clock sample of the sessions in a stitch batch (DESIGN.md §10.3).

Two kinds, each an interval on θ (server clock minus browser clock):
- each beacon batch the session sent: received_at - sent_at bounds θ from above;
- each turn of the session whose response carried the backend helper's
  ``Server-Timing`` echo: bounded on both sides (``stitching.server_timing_sample``).

Samples are per session, not per turn, because one quick round trip of a session is
what pins down the skew of its slow ones. Every event of a batch shares its
``sent_at_ms`` and ``received_at``, so beacons are grouped by them: one sample a batch.
"""

from __future__ import annotations

from collections import defaultdict

import msgspec
from django.db import connection

from correlator.stitching import MAX_SKEW_MS, ClockSample, beacon_sample, server_timing_sample
from rumserver.fastsql import fetch_prepared
from rumserver.models import BrowserEvent

# The parts of a turn event ``server_timing_sample`` reads.
_ECHO_FIELDS = ("server_timing", "t_send", "t_headers")
_decode = msgspec.json.Decoder(dict).decode


def load_clock_samples(session_pks: set[int]) -> dict[int, list[ClockSample]]:
    """session pk -> its samples."""
    if not session_pks:
        return {}
    if connection.vendor == "postgresql":
        return _pg_samples(sorted(session_pks))
    return _orm_samples(session_pks)


def _pg_samples(session_pks: list[int]) -> dict[int, list[ClockSample]]:
    table = BrowserEvent._meta.db_table
    delta = "extract(epoch FROM e.received_at)::float8 * 1000 - e.sent_at_ms"
    echo = ", ".join(f"'{name}', e.data -> '{name}'" for name in _ECHO_FIELDS)
    # Both halves probe the events by session (the session_id index) from unnest(),
    # a LATERAL probe a session with every other condition above the OFFSET 0 fence:
    # one plan whatever the statistics say. As joins, a never-analysed table had
    # PostgreSQL hash every event, and AND the probe with the whole turn-event index.
    events = f"CROSS JOIN LATERAL (SELECT * FROM {table} WHERE session_id = k.id OFFSET 0) AS e"
    rows = fetch_prepared(
        f"SELECT e.session_id, e.sent_at_ms, min({delta}), NULL::text "
        f"FROM unnest(%(sessions)s::bigint[]) AS k(id) {events} "
        f"WHERE abs({delta}) <= %(max_skew)s GROUP BY e.session_id, e.sent_at_ms "
        "UNION ALL "
        f"SELECT e.session_id, NULL, NULL, jsonb_build_object({echo})::text "
        f"FROM unnest(%(sessions)s::bigint[]) AS k(id) {events} "
        f"WHERE e.type = '{BrowserEvent.Type.TURN.value}' AND e.data ? 'server_timing'",
        {"sessions": session_pks, "max_skew": MAX_SKEW_MS},
    )
    out: dict[int, list[ClockSample]] = defaultdict(list)
    for session_pk, sent_at_ms, best_delta, echo_text in rows:
        if echo_text is None:
            sample = beacon_sample(sent_at_ms, best_delta)
        else:
            sample = server_timing_sample(_decode(echo_text))
        if sample is not None:
            out[session_pk].append(sample)
    return out


def _orm_samples(session_pks: set[int]) -> dict[int, list[ClockSample]]:
    out: dict[int, list[ClockSample]] = defaultdict(list)
    events = BrowserEvent.objects.filter(session_id__in=session_pks)
    best: dict[tuple[int, float], float] = {}
    for session_pk, received_at, sent_at_ms in events.values_list(
        "session_id", "received_at", "sent_at_ms"
    ).distinct():
        delta = received_at.timestamp() * 1000 - sent_at_ms
        key = (session_pk, sent_at_ms)
        best[key] = min(delta, best.get(key, delta))
    for (session_pk, sent_at_ms), delta in best.items():
        sample = beacon_sample(sent_at_ms, delta)
        if sample is not None:
            out[session_pk].append(sample)
    turns = events.filter(type=BrowserEvent.Type.TURN, data__has_key="server_timing")
    for session_pk, data in turns.values_list("session_id", "data"):
        sample = server_timing_sample(data)
        if sample is not None:
            out[session_pk].append(sample)
    return out
