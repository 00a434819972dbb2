"""Turn and session analytics over a set of turns (DESIGN.md §6), as plain
functions of plain rows so the metrics API, rollups and tests share one
definition.

Percentiles are nearest-rank (the smallest value with at least q of the values at
or below it), exact over the rows given. Rates are fractions 0-1 of turns, except
first-response accuracy (of the conversations
that began in the window) and hallucination rate (of scored turns).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, NamedTuple

from correlator.stitch.rules import nearest_rank

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
    groups: tuple[str, ...] = ()  # the turn's keys for the group_bys asked for


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {name: nearest_rank(values, q) for name, q in QUANTILES.items()}


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def first_response_good(*, regenerated: bool, voted_down: bool, edited: bool,
                        next_is_correction: bool) -> bool:  # fmt: skip
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
    out["turns_per_session"] = _rate(n, len(sessions))
    out["intent_corrections_per_conversation"] = _rate(
        sum(t.intent_correction for t in turns), len(conversations)
    )
    openers = [good for t in turns if (good := (first_responses or {}).get(t.span_id)) is not None]
    outcomes = defaultdict(int)
    for t in turns:
        outcomes[t.outcome] += 1
    scored = [v for t in turns if (v := (hallucination or {}).get(t.trace_id)) is not None]
    out["rates"] = {
        "stop_rate": _rate(outcomes["stopped"], n),
        "regenerate_rate": _rate(sum(bool(t.regenerate_of) for t in turns), n),
        "abandonment_rate": _rate(outcomes["abandoned"], n),
        "abandonment_before_first_token_rate": _rate(
            sum(t.outcome == "abandoned" and t.client_ttft_ms is None for t in turns), n
        ),
        "error_rate": _rate(outcomes["error"], n),
        "first_response_accuracy": _rate(sum(openers), len(openers)),
        "hallucination_rate": _rate(sum(v >= HALLUCINATION_THRESHOLD for v in scored), len(scored)),
    }
    return out
