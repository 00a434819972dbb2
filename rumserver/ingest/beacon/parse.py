"""Turning a beacon body into rows, without touching the database.

``parse_batch`` validates the envelope (a bad envelope is a 400 naming the
field), then each event on its own (a bad event is rejected alone), cuts long
strings and lists and flags the event, and returns plain row dicts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from rumserver.ingest.beacon.schema import (
    MAX_MAP_ENTRIES,
    MAX_TBT_GAPS,
    MAX_TURN_MS,
    TEXT_LIMITS,
    TIME_ORDER_TOLERANCE_MS,
    TURN_TIMES,
    Batch,
    TurnEvent,
    VitalEvent,
    batch_decoder,
    event_decoder,
)
from rumserver.ingest.errors import IngestError
from rumserver.ingest.text import storable_text

MAX_LIST_ITEMS = {"tbt_gaps": MAX_TBT_GAPS, "server_timing": MAX_MAP_ENTRIES}
# A "\\uD800".."\\uDFFF" escape; msgspec refuses the lone ones (not half of a pair).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_PATH_RE = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")


@dataclass
class EventRow:
    event_id: str
    type: str
    name: str
    ts_ms: float
    trace_id: str
    span_id: str
    turn_span_id: str
    truncated: bool
    data: dict[str, Any]


@dataclass
class ParsedBatch:
    batch: Batch
    rows: list[EventRow] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    session_truncated: bool = False

    @property
    def trace_ids(self) -> list[str]:
        return sorted({row.trace_id for row in self.rows if row.trace_id})


def split_validation_error(exc: Exception) -> tuple[str, str | None]:
    """msgspec's "Expected `int`, got `str` - at `$.events[2].ts`" -> (message, "events[2].ts")."""
    text = str(exc)
    match = _PATH_RE.search(text)
    if not match:
        return text, None
    return text[: match.start()], match.group("path") or None


def parse_batch(body: bytes, *, max_events: int) -> ParsedBatch:
    try:
        batch = _decode_batch(body)
    except msgspec.ValidationError as exc:
        message, path = split_validation_error(exc)
        raise IngestError(400, f"invalid batch: {message}", field=path) from None
    except (msgspec.DecodeError, UnicodeDecodeError):
        raise IngestError(400, "body is not valid UTF-8 JSON") from None
    except RecursionError:
        raise IngestError(400, "body is nested too deeply") from None
    if len(batch.events) > max_events:
        raise IngestError(413, f"at most {max_events} events a batch", field="events")

    parsed = ParsedBatch(batch=batch)
    seen: dict[str, int] = {}
    for index, raw in enumerate(batch.events):
        try:
            event = event_decoder.decode(raw)
        except msgspec.ValidationError as exc:
            message, path = split_validation_error(exc)
            parsed.rejected.append(
                {"index": index, "error": f"{path}: {message}" if path else message}
            )
            continue
        except (msgspec.DecodeError, UnicodeDecodeError):
            parsed.rejected.append({"index": index, "error": "event is not valid UTF-8 JSON"})
            continue
        except RecursionError:
            parsed.rejected.append({"index": index, "error": "event is nested too deeply"})
            continue
        if isinstance(event, TurnEvent):
            error = checked_turn_times(event)
            if error:
                parsed.rejected.append({"index": index, "error": error})
                continue
        row = _event_row(event, page_url=batch.page.url)
        # The same id twice in one batch: one row. A vital keeps its newest report.
        if row.event_id in seen:
            if isinstance(event, VitalEvent):
                parsed.rows[seen[row.event_id]] = row
            continue
        seen[row.event_id] = len(parsed.rows)
        parsed.rows.append(row)
    return parsed


def _decode_batch(body: bytes) -> Batch:
    try:
        return batch_decoder.decode(body)
    except msgspec.DecodeError:
        if not _SURROGATE_ESCAPE.search(body):
            raise
    return _decode_around_lone_surrogates(body)


def _decode_around_lone_surrogates(body: bytes) -> Batch:
    """msgspec refuses a body with a lone UTF-16 surrogate escape anywhere, even inside
    the events it keeps raw (JSON.stringify writes one for a string cut between the two
    halves of an emoji). So such a body is read again: the envelope through msgspec (a
    lone surrogate there is a 400), each event re-encoded on its own, so that the one
    holding it is rejected alone, as an event with invalid UTF-8 bytes is."""
    try:
        data = json.loads(body.decode("utf-8"))
    except ValueError:  # invalid UTF-8 or JSON (UnicodeDecodeError is a ValueError)
        raise msgspec.DecodeError("body is not valid UTF-8 JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("events", []), list):
        raise msgspec.DecodeError("lone surrogate outside the events")
    events = data.pop("events", [])
    batch = batch_decoder.decode(json.dumps(data))
    batch.events = [msgspec.Raw(json.dumps(event).encode()) for event in events]
    return batch


def checked_turn_times(turn: TurnEvent) -> str | None:
    """``turn_time_error``, and the turn's jitter snapped when it has none. Nearly
    every turn is in order: that case costs one sorted() of its times and no
    per-field loop (it was 5 % of a beacon's ingest time)."""
    times = [
        t
        for t in (turn.t_send, turn.t_headers, turn.t_first_token, turn.t_last_token, turn.t_end)
        if t is not None
    ]
    if times == sorted(times) and times[-1] - times[0] < MAX_TURN_MS:
        return _gap_error(turn)
    error = turn_time_error(turn)
    if error is None:
        snap_time_jitter(turn)
    return error


def turn_time_error(turn: TurnEvent) -> str | None:
    """Why a turn's times cannot be true (reason ``time_order``), or None.

    The times present must run t_send <= t_headers <= t_first_token <= t_last_token
    <= t_end, give or take TIME_ORDER_TOLERANCE_MS, and every duration (these and the
    gaps between tokens) stay under one hour."""
    latest_name, latest = TURN_TIMES[0], turn.t_send
    for name in TURN_TIMES[1:]:
        value = getattr(turn, name)
        if value is None:
            continue
        if value < latest - TIME_ORDER_TOLERANCE_MS:
            return f"time_order: {name} is {latest - value:.1f} ms before {latest_name}"
        if value - turn.t_send >= MAX_TURN_MS:
            return (
                f"time_order: {name} is {value - turn.t_send:.0f} ms after t_send (over one hour)"
            )
        if value > latest:
            latest_name, latest = name, value
    return _gap_error(turn)


def _gap_error(turn: TurnEvent) -> str | None:
    summary = turn.tbt_summary
    if (turn.tbt_gaps and max(turn.tbt_gaps) >= MAX_TURN_MS) or (
        summary is not None
        and any(g is not None and g >= MAX_TURN_MS for g in (summary.p50, summary.p95, summary.max))
    ):
        return "time_order: a gap between tokens (tbt_gaps or tbt_summary) is over one hour"
    return None


def snap_time_jitter(turn: TurnEvent) -> None:
    """Raise a time that is (within the tolerance) before its predecessor to it: that
    is rounding, and left alone it would make a duration of the turn negative."""
    latest = turn.t_send
    for name in TURN_TIMES[1:]:
        value = getattr(turn, name)
        if value is None:
            continue
        if value < latest:
            setattr(turn, name, latest)
        latest = max(latest, value)


def _event_row(event: Any, *, page_url: str) -> EventRow:
    data = msgspec.to_builtins(event)
    data["page_url"] = page_url
    data, truncated = cut(data)
    trace_id = getattr(event, "trace_id", None) or ""
    span_id = event.span_id if isinstance(event, TurnEvent) else ""
    turn_span_id = getattr(event, "turn_span_id", None) or ""
    name = str(data.get("name") or "")[:64]  # action and vital names; blank for the rest
    return EventRow(
        event_id=event.id,
        type=data["type"],
        name=name,
        ts_ms=event.ts,
        trace_id=trace_id,
        span_id=span_id,
        turn_span_id=turn_span_id,
        truncated=truncated,
        data=data,
    )


def cut_text(value: str, key: str) -> tuple[str, bool]:
    """``storable_text`` within the limit of the field named ``key``."""
    return storable_text(value, TEXT_LIMITS.get(key, TEXT_LIMITS["default"]))


def cut(data: dict[str, Any], *, key_limit: int = 64) -> tuple[dict[str, Any], bool]:
    """Cut strings, lists and maps of a decoded event to the server's limits."""
    truncated = False
    out: dict[str, Any] = {}
    for index, (key, value) in enumerate(data.items()):
        if index >= MAX_MAP_ENTRIES * 2 or len(key) > key_limit or "\x00" in key:
            truncated = True
            continue
        if isinstance(value, str):
            value, was_cut = cut_text(value, key)
            truncated |= was_cut
        elif isinstance(value, list):
            limit = MAX_LIST_ITEMS.get(key, MAX_MAP_ENTRIES)
            if len(value) > limit:
                value, truncated = value[:limit], True
            if value and isinstance(value[0], dict):  # lists are of one type; skip numbers
                cleaned = []
                for item in value:
                    item, was_cut = cut(item)
                    truncated |= was_cut
                    cleaned.append(item)
                value = cleaned
        elif isinstance(value, dict):
            if len(value) > MAX_MAP_ENTRIES:
                value, truncated = dict(list(value.items())[:MAX_MAP_ENTRIES]), True
            value, was_cut = cut(value)
            truncated |= was_cut
        out[key] = value
    return out, truncated
