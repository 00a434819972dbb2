"""Turn and session analytics over a set of turns (DESIGN.md §6), exactly: as plain
functions of plain rows so the metrics API, rollups and tests share one
definition; and the reads of a window's turns with what their figures need (each
conversation's first response, each trace's hallucination score).

Percentiles are nearest-rank (the smallest value with at least q of the values at
or below it), exact over the rows given. Rates are fractions 0-1 of turns, except
first-response accuracy (of the conversations
that began in the window) and hallucination rate (of scored turns).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from correlator import selectors
from correlator.models import Turn
from correlator.stitch.rules import nearest_rank
from rumserver.models import Application
from rumserver.pricing import usd

QUANTILES = {"p50": 0.5, "p75": 0.75, "p95": 0.95, "p99": 0.99}
DURATIONS = {
    "client_ttft_ms": "client_ttft_ms",
    "server_ttft_ms": "server_ttft_ms",
    "model_ttft_ms": "model_ttft_ms",
    "queue_ms": "queue_ms",
    "tbt_ms": "tbt_p50_ms",  # each turn's median gap
    "tpot_ms": "tpot_ms",
}
HALLUCINATION_THRESHOLD = 0.5


class TurnRow(NamedTuple):
    """A turn's figures (a tuple: windows and rollup rebuilds make tens of thousands)."""

    span_id: str
    trace_id: str
    session: int
    conversation: str
    t_send_ms: float
    outcome: str
    regenerated: bool
    regenerate_of: str
    intent_correction: bool
    client_ttft_ms: float | None
    server_ttft_ms: float | None
    model_ttft_ms: float | None
    queue_ms: float | None
    tbt_p50_ms: float | None
    tpot_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cost_nano_usd: int | None  # None: the model had no price at the turn's time
    groups: tuple[str, ...] = ()  # the turn's keys for the group_bys asked for


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {name: nearest_rank(values, q) for name, q in QUANTILES.items()}


def rate(part: int, whole: int) -> float | None:
    """``part`` of ``whole``; None when there is no whole to take a share of."""
    return part / whole if whole else None


def cost_figures(cost_nano_usd: int, unpriced_turns: int) -> dict[str, Any]:
    """What the turns cost, and how many of them had no price (costed at nothing).
    Both paths sum each turn's stored nano-dollars (``rumserver.pricing``), so the
    exact answer and the rollups' agree exactly."""
    return {"cost_usd": usd(cost_nano_usd), "cost_unpriced_turns": unpriced_turns}


def first_response_good(
    *, regenerated: bool, voted_down: bool, edited: bool, next_is_correction: bool
) -> bool:
    """A conversation's first answer was right unless it was regenerated, edited,
    voted down or followed by an intent correction, whatever its outcome."""
    return not (regenerated or voted_down or edited or next_is_correction)


def summarize(
    turns: Sequence[TurnRow],
    *,
    first_responses: dict[str, bool] | None = None,
    hallucination: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The metrics API's figures for these turns. ``first_responses``: span id of
    each conversation's first turn -> whether that answer was right (only
    conversations that began among these turns count); ``hallucination``: trace
    id -> the latest ``hallucination`` score of that trace."""
    n = len(turns)
    sessions = {t.session for t in turns}
    conversations = {t.conversation for t in turns}
    out: dict[str, Any] = {
        "turns": n,
        "sessions": len(sessions),
        "conversations": len(conversations),
    }
    for name, column in DURATIONS.items():
        values = [v for t in turns if (v := getattr(t, column)) is not None]
        out[name] = percentiles(values)
    out["input_tokens"] = sum(t.input_tokens or 0 for t in turns)
    out["output_tokens"] = sum(t.output_tokens or 0 for t in turns)
    out.update(
        cost_figures(
            sum(t.cost_nano_usd or 0 for t in turns), sum(t.cost_nano_usd is None for t in turns)
        )
    )
    out["turns_per_session"] = rate(n, len(sessions))
    out["intent_corrections_per_conversation"] = rate(
        sum(t.intent_correction for t in turns), len(conversations)
    )
    openers = [good for t in turns if (good := (first_responses or {}).get(t.span_id)) is not None]
    outcomes: defaultdict[str, int] = defaultdict(int)
    for t in turns:
        outcomes[t.outcome] += 1
    scored = [v for t in turns if (v := (hallucination or {}).get(t.trace_id)) is not None]
    out["rates"] = {
        "stop_rate": rate(outcomes["stopped"], n),
        "regenerate_rate": rate(sum(bool(t.regenerate_of) for t in turns), n),
        "abandonment_rate": rate(outcomes["abandoned"], n),
        "abandonment_before_first_token_rate": rate(
            sum(t.outcome == "abandoned" and t.client_ttft_ms is None for t in turns), n
        ),
        "error_rate": rate(outcomes["error"], n),
        "first_response_accuracy": rate(sum(openers), len(openers)),
        "hallucination_rate": rate(sum(v >= HALLUCINATION_THRESHOLD for v in scored), len(scored)),
    }
    return out


# --- a window's turns and what their figures need -----------------------------------

# The columns of a ``TurnRow``, in order.
TURN_COLUMNS = (
    "span_id",
    "trace__trace_id",
    "session_id",
    "conversation_id",
    "t_send_ms",
    "outcome",
    "regenerated",
    "regenerate_of",
    "intent_correction",
    "client_ttft_ms",
    "server_ttft_ms",
    "model_ttft_ms",
    "queue_ms",
    "tbt_p50_ms",
    "tpot_ms",
    "input_tokens",
    "output_tokens",
    "cost_nano_usd",
)
GROUP_COLUMNS = {
    "model": "model",
    "browser": "session__browser",
    "os": "session__os",
    "device": "session__device_class",
}


def window_turns(
    *, app: Application, since: datetime, until: datetime, group_bys: list[str] | None = None
) -> list[TurnRow]:
    """The turns sent in [since, until) by their skew-corrected send time, with their
    key for each of ``group_bys`` (``GROUP_COLUMNS``), in order, in ``groups``."""
    columns = [*TURN_COLUMNS, *(GROUP_COLUMNS[key] for key in group_bys or [])]
    rows = Turn.objects.filter(
        app=app, t_send_ms__gte=since.timestamp() * 1000, t_send_ms__lt=until.timestamp() * 1000
    ).values_list(*columns)
    width = len(TURN_COLUMNS)
    return [
        TurnRow._make((*row[:width], tuple(str(value) for value in row[width:]))) for row in rows
    ]


def exact_window(
    app: Application, since: datetime, until: datetime, group_bys: list[str] | None = None
) -> tuple[list[TurnRow], Callable[[list[TurnRow]], dict[str, Any]]]:
    """The window's turns, and ``summarize`` for any subset of them with the window's
    first responses and hallucination scores."""
    turns = window_turns(app=app, since=since, until=until, group_bys=group_bys)
    openers = first_responses(app=app, turns=turns)
    scores = latest_hallucination(app=app, trace_ids={t.trace_id for t in turns})

    def figures(rows: list[TurnRow]) -> dict[str, Any]:
        return summarize(rows, first_responses=openers, hallucination=scores)

    return turns, figures


def turn_feedback(
    *, app: Application | int, span_ids: set[str], since_ms: float | None = None
) -> tuple[set[str], set[str]]:
    """(voted down, edited): span ids of these turns with a thumbs-down or an edit;
    ``since_ms`` the turns' earliest send time (``selectors.feedback_events``)."""
    voted_down: set[str] = set()
    edited: set[str] = set()
    app_id = app if isinstance(app, int) else app.pk
    events = selectors.feedback_events(app_id=app_id, span_ids=span_ids, since_ms=since_ms)
    for kind, name, span_id, data in events:
        value = data.get("value") if kind == "feedback" else None
        if (
            name == "feedback-down"
            or value == "down"
            or (isinstance(value, int | float) and value < 0.5)
        ):
            voted_down.add(span_id)
        elif name == "edit":
            edited.add(span_id)
    return voted_down, edited


def latest_hallucination(*, app: Application | int, trace_ids: set[str]) -> dict[str, float]:
    """trace id -> the value of its latest ``hallucination`` score."""
    latest: dict[str, tuple[datetime, float]] = {}
    app_id = app if isinstance(app, int) else app.pk
    for trace_id, received_at, value in selectors.hallucination_scores(
        app_id=app_id, trace_ids=trace_ids
    ):
        if trace_id not in latest or received_at >= latest[trace_id][0]:
            latest[trace_id] = (received_at, value)
    return {trace_id: value for trace_id, (_, value) in latest.items()}


@dataclass(frozen=True)
class Opening:
    """The first turn of a conversation, and whether the second corrected it."""

    span_id: str
    t_send_ms: float
    regenerated: bool
    next_is_correction: bool


def conversation_openings(
    *, app: Application | int, conversations: Iterable[str]
) -> dict[str, Opening]:
    """conversation id -> its first turn ever (by send time), and whether the second
    was an intent correction."""
    app_id = app if isinstance(app, int) else app.pk
    openings: dict[str, Opening] = {}
    rows = selectors.conversation_openers(app_id=app_id, conversations=list(conversations))
    for conversation, (first, *rest) in rows.items():
        corrected = bool(rest) and rest[0].intent_correction
        openings[conversation] = Opening(
            first.span_id, first.t_send_ms, first.regenerated, corrected
        )
    return openings


def first_responses(*, app: Application | int, turns: Iterable[TurnRow]) -> dict[str, bool]:
    """For the conversations that began among these turns: the first turn's span id
    -> whether its answer was right (``first_response_good``)."""
    turns = list(turns)
    in_window = {t.span_id for t in turns}
    openings = conversation_openings(app=app, conversations={t.conversation for t in turns})
    openers = [o for o in openings.values() if o.span_id in in_window]
    voted_down, edited = turn_feedback(
        app=app,
        span_ids={o.span_id for o in openers},
        since_ms=min((o.t_send_ms for o in openers), default=None),
    )
    return {
        o.span_id: first_response_good(
            regenerated=o.regenerated,
            voted_down=o.span_id in voted_down,
            edited=o.span_id in edited,
            next_is_correction=o.next_is_correction,
        )
        for o in openers
    }
