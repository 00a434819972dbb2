"""One browser session: its turns by conversation, each with its actions and
feedback on the turns' timeline."""

from __future__ import annotations

from typing import Any

from django.http import Http404

from correlator import selectors
from correlator.models import Turn
from correlator.reports.format import display_value, fmt_ms, when
from correlator.reports.forms import User
from rumserver.models import BrowserEvent, BrowserSession

TURN_LIMIT = 500
EVENT_LIMIT = 1000


def find_session(*, user: User, key: str, app_slug: str | None = None) -> BrowserSession:
    """By the browser's session id, else (all digits) by primary key; only in the
    applications this user may see."""
    sessions = BrowserSession.objects.filter(app__in=selectors.visible_applications(user))
    if app_slug:
        sessions = sessions.filter(app__slug=app_slug)
    found = list(sessions.filter(session_id=key).select_related("app")[:2])
    if len(found) != 1 and key.isdigit():
        found = list(sessions.filter(pk=int(key)).select_related("app")[:1])
    if len(found) != 1:
        raise Http404("no such session in your applications")
    return found[0]


def _event_details(event: BrowserEvent) -> str:
    data = event.data if isinstance(event.data, dict) else {}
    skip = ("id", "type", "ts", "name", "turn_span_id")
    extra = {k: v for k, v in data.items() if k not in skip and v not in (None, "", {}, [])}
    return ", ".join(f"{k}={display_value(v)}" for k, v in sorted(extra.items()))


def session_view(session: BrowserSession) -> dict[str, Any]:
    """The session's turns in order, grouped by conversation, each conversation with
    its actions and feedback in time order (browser times moved by the turn's clock
    skew, so they sit on the turns' timeline)."""
    turns = list(
        Turn.objects.filter(session=session)
        .select_related("trace")
        .order_by("t_send_ms", "id")[:TURN_LIMIT]
    )
    events = list(
        BrowserEvent.objects.filter(session=session)
        .exclude(type__in=[BrowserEvent.Type.TURN, BrowserEvent.Type.VITAL])
        .order_by("ts_ms", "id")[:EVENT_LIMIT]
    )
    by_span = {t.span_id: t for t in turns}
    default_skew = turns[0].trace.clock_skew_ms if turns else 0.0
    conversations: dict[str, list[dict[str, Any]]] = {}
    for turn in turns:
        conversations.setdefault(turn.conversation_id, []).append(
            {
                "kind": "turn",
                "at": turn.t_send_ms,
                "time": when(turn.t_send_ms),
                "turn": turn,
                "client_ttft": fmt_ms(turn.client_ttft_ms),
                "server_ttft": fmt_ms(turn.server_ttft_ms),
                "model_ttft": fmt_ms(turn.model_ttft_ms),
                "trace_id": turn.trace.trace_id,
            }
        )
    loose: list[dict[str, Any]] = []
    for event in events:
        its_turn = by_span.get(event.turn_span_id)
        at = event.ts_ms + (its_turn.trace.clock_skew_ms if its_turn else default_skew)
        item = {
            "kind": event.type,
            "at": at,
            "time": when(at),
            "name": event.name,
            "details": _event_details(event),
            "turn_span_id": event.turn_span_id,
        }
        if its_turn is not None:
            conversations[its_turn.conversation_id].append(item)
        else:
            loose.append(item)
    for items in conversations.values():
        items.sort(key=lambda item: (item["at"], item["kind"] != "turn"))
    return {
        "session": session,
        "conversations": list(conversations.items()),
        "loose_events": loose,
        "turn_count": len(turns),
        "truncated": len(turns) >= TURN_LIMIT or len(events) >= EVENT_LIMIT,
    }
