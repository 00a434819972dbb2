"""Lookups of many keys at once that must stay index probes.

On PostgreSQL each is a join from ``unnest()`` of the keys, so the plan is one
parameterized index scan per key whatever the statistics say. Written as ``IN``
lists, a growing table with stale statistics (autovacuum behind, or off) made the
planner scan every turn of the application per stitch batch: bench/stitch, 56 ms
a batch of 200. Elsewhere (SQLite) the ORM asks the same.
"""

from __future__ import annotations

from collections import defaultdict
from typing import NamedTuple

from django.db import connection

from correlator.models import Trace, Turn


class OpeningRow(NamedTuple):
    span_id: str
    t_send_ms: float
    regenerated: bool
    intent_correction: bool


def trace_starts(*, app_id: int, trace_ids: list[str]) -> dict[str, float]:
    """trace id -> the stitched trace's start (epoch ms), for those stitched before."""
    if not trace_ids:
        return {}
    if connection.vendor != "postgresql":
        rows = Trace.objects.filter(app_id=app_id, trace_id__in=trace_ids)
        return dict(rows.values_list("trace_id", "start_ms"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT t.trace_id, t.start_ms FROM unnest(%s::text[]) AS k(trace_id) "
            f"JOIN {Trace._meta.db_table} t ON t.app_id = %s AND t.trace_id = k.trace_id",
            [sorted(set(trace_ids)), app_id],
        )
        return dict(cursor.fetchall())


def conversation_openers(*, app_id: int, conversations: list[str]) -> dict[str, list[OpeningRow]]:
    """conversation id -> its first two turns by send time (fewer if it has fewer),
    through the (app, conversation, send time) index."""
    if not conversations:
        return {}
    out: dict[str, list[OpeningRow]] = defaultdict(list)
    wanted = sorted(set(conversations))
    if connection.vendor != "postgresql":
        for start in range(0, len(wanted), 500):
            rows = Turn.objects.filter(
                app_id=app_id, conversation_id__in=wanted[start : start + 500]
            )
            for conversation, *row in rows.order_by("conversation_id", "t_send_ms", "span_id")\
                    .values_list("conversation_id", "span_id", "t_send_ms", "regenerated",
                                 "intent_correction"):  # fmt: skip
                if len(out[conversation]) < 2:
                    out[conversation].append(OpeningRow(*row))
        return dict(out)
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT k.conversation_id, x.span_id, x.t_send_ms, x.regenerated,
                       x.intent_correction
                FROM unnest(%s::text[]) AS k(conversation_id)
                CROSS JOIN LATERAL (
                    SELECT span_id, t_send_ms, regenerated, intent_correction
                    FROM {Turn._meta.db_table}
                    WHERE app_id = %s AND conversation_id = k.conversation_id
                    ORDER BY t_send_ms, span_id LIMIT 2
                ) AS x
                ORDER BY k.conversation_id, x.t_send_ms, x.span_id""",
            [wanted, app_id],
        )
        for conversation, *row in cursor.fetchall():
            out[conversation].append(OpeningRow(*row))
    return dict(out)


def regenerated_span_ids(*, span_ids: list[str]) -> set[tuple[int, str]]:
    """(app id, span id) of those turns that a stitched turn regenerates, through the
    partial index on ``regenerate_of`` (an ``IN`` list here was a scan of every
    turn per batch once the table had outgrown its statistics)."""
    if not span_ids:
        return set()
    if connection.vendor != "postgresql":
        rows = Turn.objects.filter(regenerate_of__in=span_ids).exclude(regenerate_of="")
        return set(rows.values_list("app_id", "regenerate_of"))
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT x.app_id, k.span_id FROM unnest(%s::text[]) AS k(span_id)
                CROSS JOIN LATERAL (
                    SELECT app_id FROM {Turn._meta.db_table}
                    WHERE regenerate_of = k.span_id AND regenerate_of <> ''
                    OFFSET 0  -- a fence: flattened into a join, it became a hash join on a scan
                ) AS x""",
            [sorted(set(span_ids))],
        )
        return set(cursor.fetchall())
