"""The trace list: one page of an application's traces, newest first, read by keyset
from the (app, start) index (no OFFSET, no COUNT)."""

from __future__ import annotations

from typing import Any

from correlator import selectors
from correlator.reports.format import DASH, fmt_ms, when
from correlator.reports.forms import TraceFilters, User
from rumserver.models import Application

PAGE_SIZE = 50


def trace_rows(
    *, user: User, app: Application, filters: TraceFilters, cursor: tuple[float, int] | None
) -> tuple[list[dict[str, Any]], str]:
    """One page of traces, newest first, and the cursor of the next page ("" at the
    end). Reads the (app, start_ms) index backwards with a LIMIT."""
    # The application by id (selectors.trace_list): a join on the slug hides it from
    # the planner, which then sorts every trace (1 s at 2 million) instead of walking
    # the index.
    page = selectors.trace_page(
        user=user, app=app, before=cursor, limit=PAGE_SIZE + 1, **filters.selector_kwargs()
    )
    more = len(page) > PAGE_SIZE
    page = selectors.with_turns(page[:PAGE_SIZE])
    rows = []
    for trace in page:
        turn = trace.turn_or_none
        rows.append(
            {
                "trace_id": trace.trace_id,
                "start": when(trace.start_ms),
                "state": trace.state,
                "linked": trace.linked,
                "propagation": trace.propagation_cause or trace.propagation,
                "spans": trace.span_count,
                "outcome": turn.outcome if turn else "",
                "model": turn.model if turn else "",
                "client_ttft": fmt_ms(turn.client_ttft_ms) if turn else DASH,
                "server_ttft": fmt_ms(turn.server_ttft_ms) if turn else DASH,
                "model_ttft": fmt_ms(turn.model_ttft_ms) if turn else DASH,
                "session_pk": turn.session_id if turn else None,
            }
        )
    next_cursor = f"{page[-1].start_ms!r}_{page[-1].id}" if more and page else ""
    return rows, next_cursor
