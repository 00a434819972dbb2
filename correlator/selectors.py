"""Read queries behind the API and the report pages. Every query is limited to
the applications a user may see, and reads stitched rows through indexes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from correlator import lookups
from correlator.analytics import TurnRow, first_response_good
from correlator.models import Trace, Turn
from rumserver.models import Application, Span


def visible_applications(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Application]:
    """Staff see every application; others those they are members of."""
    if not user.is_authenticated:
        return Application.objects.none()
    if getattr(user, "is_staff", False):
        return Application.objects.all()
    return Application.objects.filter(members=user)


def trace_detail(*, user: AbstractBaseUser | AnonymousUser, trace_id: str,
                 app_slug: str | None = None) -> Trace | None:  # fmt: skip
    traces = Trace.objects.filter(app__in=visible_applications(user), trace_id=trace_id)
    if app_slug:
        traces = traces.filter(app__slug=app_slug)
    found = list(traces.select_related("app", "turn", "turn__session")[:2])
    return found[0] if len(found) == 1 else None


def trace_spans(trace: Trace, *, limit: int | None = None) -> list[Span]:
    """The trace's spans by start, each with its role in the trace (``Trace.role_of``)."""
    spans = Span.objects.filter(app_id=trace.app_id, trace_id=trace.trace_id).order_by(
        "start_ns", "span_id"
    )
    found = list(spans[:limit] if limit is not None else spans)
    for span in found:
        span.role = trace.role_of(span)
    return found


def trace_list(
    *,
    user: AbstractBaseUser | AnonymousUser,
    app: Application | None = None,
    outcome: str | None = None,
    model: str | None = None,
    min_client_ttft_ms: float | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[Trace]:
    """Newest first by the trace's start (the browser span's skew-corrected send time,
    else its earliest span); every state and outcome unless filtered. ``app`` is one
    the caller has found among the user's (``visible_applications``); a filter left
    at None does not filter."""
    traces = Trace.objects.filter(app__in=visible_applications(user))
    if app is not None:
        # By id, not through a join on the slug: the join made PostgreSQL sort every
        # trace of the application instead of reading the (app, start) index
        # backwards (1.3 s against under 1 ms with 2 million traces).
        traces = traces.filter(app_id=app.pk)
    if outcome:
        traces = traces.filter(turn__outcome=outcome)
    if model:
        traces = traces.filter(turn__model=model)
    if min_client_ttft_ms is not None:
        traces = traces.filter(turn__client_ttft_ms__gte=min_client_ttft_ms)
    if since:
        traces = traces.filter(start_ms__gte=since.timestamp() * 1000)
    if until:
        traces = traces.filter(start_ms__lt=until.timestamp() * 1000)
    return traces.select_related("app", "turn", "turn__session").order_by("-start_ms", "-id")


GROUP_COLUMNS = {
    "model": "model",
    "browser": "session__browser",
    "os": "session__os",
    "device": "session__device_class",
}


def metrics_turns(
    *, app: Application, since: datetime, until: datetime, group_bys: list[str] | None = None
) -> list[TurnRow]:
    """The turns sent in [since, until) by their skew-corrected send time, with their
    key for each of ``group_bys`` (``GROUP_COLUMNS``), in order, in ``groups``."""
    columns = [
        "span_id", "trace__trace_id", "session_id", "conversation_id", "t_send_ms", "outcome",
        "regenerated", "regenerate_of", "intent_correction", "client_ttft_ms", "server_ttft_ms",
        "model_ttft_ms", "queue_ms", "tbt_p50_ms", "tpot_ms", "input_tokens", "output_tokens",
    ]  # fmt: skip
    columns += [GROUP_COLUMNS[key] for key in group_bys or []]
    rows = Turn.objects.filter(
        app=app, t_send_ms__gte=since.timestamp() * 1000, t_send_ms__lt=until.timestamp() * 1000
    ).values_list(*columns)
    return [TurnRow(*row[:17], groups=tuple(str(value) for value in row[17:])) for row in rows]


def turn_feedback(*, app: Application | int, span_ids: set[str]) -> tuple[set[str], set[str]]:
    """(voted down, edited): span ids of these turns with a thumbs-down or an edit."""
    voted_down: set[str] = set()
    edited: set[str] = set()
    app_id = app if isinstance(app, int) else app.pk
    for kind, name, span_id, data in lookups.feedback_events(app_id=app_id, span_ids=span_ids):
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
    for trace_id, received_at, value in lookups.hallucination_scores(
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


_CHUNK = 2000


def conversation_openings(
    *, app: Application | int, conversations: Iterable[str]
) -> dict[str, Opening]:
    """conversation id -> its first turn ever (by send time), and whether the second
    was an intent correction."""
    app_id = app if isinstance(app, int) else app.pk
    openings: dict[str, Opening] = {}
    rows = lookups.conversation_openers(app_id=app_id, conversations=list(conversations))
    for conversation, (first, *rest) in rows.items():
        corrected = bool(rest) and rest[0].intent_correction
        openings[conversation] = Opening(
            first.span_id, first.t_send_ms, first.regenerated, corrected
        )
    return openings


def first_responses(*, app: Application | int, turns: Iterable[TurnRow]) -> dict[str, bool]:
    """For the conversations that began among these turns: the first turn's span id
    -> whether its answer was right (``analytics.first_response_good``)."""
    turns = list(turns)
    in_window = {t.span_id for t in turns}
    openings = conversation_openings(app=app, conversations={t.conversation for t in turns})
    openers = [o for o in openings.values() if o.span_id in in_window]
    voted_down, edited = turn_feedback(app=app, span_ids={o.span_id for o in openers})
    return {
        o.span_id: first_response_good(
            regenerated=o.regenerated,
            voted_down=o.span_id in voted_down,
            edited=o.span_id in edited,
            next_is_correction=o.next_is_correction,
        )  # fmt: skip
        for o in openers
    }
