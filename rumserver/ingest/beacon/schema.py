"""Beacon payload v1 (DESIGN.md §4) as msgspec structs: the compiled validator
of the hot path, and the source of ``rumserver/schemas/beacon.v1.json``.

The envelope is decoded first with ``events`` left raw, then each event on its
own, so that one bad event is rejected alone and never sinks its batch.

Regenerate the published schema after a change here with
``python -m rumserver.ingest.beacon.schema > rumserver/schemas/beacon.v1.json``;
a test fails when the file and these structs disagree.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

import msgspec

# Browser epoch milliseconds: 2000-01-01 .. 2100-01-01. Anything else is a broken clock
# or an attack, and would poison percentiles downstream.
EpochMs = Annotated[
    float,
    msgspec.Meta(ge=946_684_800_000, le=4_102_444_800_000, description="Epoch ms, browser clock"),
]
DurationMs = Annotated[float, msgspec.Meta(ge=0, le=86_400_000, description="Milliseconds")]
Count = Annotated[int, msgspec.Meta(ge=0, le=10_000_000)]
ClientId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9._:-]+$(?!\n)",
        description="Client-made id (a UUID from the SDK)",
    ),
]
TraceId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?!0{32})[0-9a-f]{32}$(?!\n)",
        description="W3C trace-id: 32 lowercase hex digits, not all zero",
    ),
]
SpanId = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^(?!0{16})[0-9a-f]{16}$(?!\n)",
        description="W3C parent-id: 16 lowercase hex digits, not all zero",
    ),
]
# Python's "$" also matches before a final newline; "(?!\n)" closes that gap and is a
# no-op for JSON Schema (ECMA-262) validators, where "$" is the end of the string.
# Free text is cut to these lengths at ingest and the event flagged, never rejected.
TEXT_LIMITS = {
    "url": 2048,
    "page_url": 2048,
    "referrer": 2048,
    "source": 2048,
    "error": 1024,
    "message": 1024,
    "stack": 8192,
    # Opt-in chat text (the SDK's captureText + redact hook); absent unless the app opts in.
    "prompt_text": 8192,
    "answer_text": 8192,
    "default": 512,
}
MAX_TBT_GAPS = 512
# A turn's times in the order they happen (DESIGN.md §10.1); a turn whose times break it
# is rejected with reason time_order. JSON Schema cannot say this: the description does.
TURN_TIMES = ("t_send", "t_headers", "t_first_token", "t_last_token", "t_end")
TIME_ORDER_TOLERANCE_MS = 1.0  # performance.now() + timeOrigin rounds; a jitter, not a bug
MAX_TURN_MS = 3_600_000.0  # every duration of a turn is under one hour
MAX_MAP_ENTRIES = 32

Scalar = str | float | bool | None


class Sdk(msgspec.Struct):
    name: str
    version: str


class Session(msgspec.Struct):
    id: ClientId
    started_at: EpochMs | None = None


class Page(msgspec.Struct):
    url: str = ""
    referrer: str = ""


class User(msgspec.Struct):
    id: str


class TbtSummary(msgspec.Struct):
    count: Count
    p50: DurationMs | None = None
    p95: DurationMs | None = None
    max: DurationMs | None = None


class ServerTimingEntry(msgspec.Struct):
    name: str
    duration: DurationMs | None = None
    description: str = ""


class _Event(msgspec.Struct, tag_field="type"):
    id: ClientId
    ts: EpochMs


class TurnEvent(_Event, tag="turn"):
    """One chat request as the browser saw it. Its times run t_send <= t_headers <=
    t_first_token <= t_last_token <= t_end (those present, 1 ms tolerance) within one
    hour, or the turn is rejected with reason time_order."""

    trace_id: TraceId
    span_id: SpanId
    t_send: EpochMs
    conversation_id: str | None = None
    turn_index: Count | None = None
    url: str = ""
    method: str = "POST"
    status: Annotated[int, msgspec.Meta(ge=0, le=999)] | None = None
    t_headers: EpochMs | None = None
    t_first_token: EpochMs | None = None
    t_last_token: EpochMs | None = None
    t_end: EpochMs | None = None
    chunks: Count | None = None
    tbt_gaps: list[DurationMs] = []
    tbt_summary: TbtSummary | None = None
    output_tokens: Count | None = None
    tokens_estimated: bool = False
    model: str | None = None
    usage: dict[str, Count] | None = None
    server_timing: list[ServerTimingEntry] = []
    outcome: Literal["completed", "stopped", "abandoned", "error"] = "completed"
    regenerate_of: SpanId | None = None
    intent_correction: bool = False
    error: str | None = None
    # Only when the app opted in (captureText), and then what its redact hook returned.
    prompt_text: str | None = None
    answer_text: str | None = None


class ActionEvent(_Event, tag="action"):
    name: Annotated[str, msgspec.Meta(min_length=1)]
    turn_span_id: SpanId | None = None
    trace_id: TraceId | None = None
    attrs: dict[str, Scalar] = {}


class FeedbackEvent(_Event, tag="feedback"):
    value: Literal["up", "down"] | float
    comment: str | None = None
    turn_span_id: SpanId | None = None
    trace_id: TraceId | None = None


class VitalEvent(_Event, tag="vital"):
    """A web-vitals report. The SDK uses the metric's own id as the event id, so a
    metric reported again (CLS grows) updates its row instead of adding one."""

    name: Literal["LCP", "INP", "CLS", "FCP", "TTFB"]
    value: Annotated[float, msgspec.Meta(ge=0, le=86_400_000)]
    delta: Annotated[float, msgspec.Meta(ge=-86_400_000, le=86_400_000)] | None = None
    rating: Literal["good", "needs-improvement", "poor"] | None = None
    navigation_type: str | None = None


class ErrorEvent(_Event, tag="error"):
    message: str
    stack: str | None = None
    source: str | None = None
    lineno: Count | None = None
    colno: Count | None = None


class PageViewEvent(_Event, tag="page_view"):
    url: str
    referrer: str | None = None
    route_change: bool = False


Event = TurnEvent | ActionEvent | FeedbackEvent | VitalEvent | ErrorEvent | PageViewEvent


class _BatchHead(msgspec.Struct):
    v: Literal[1]
    sdk: Sdk
    sent_at: EpochMs
    session: Session
    page: Page = msgspec.field(default_factory=Page)
    user: User | None = None
    # Events the SDK's bounded queue dropped (oldest first) before this send.
    dropped: Count = 0


class Batch(_BatchHead):
    """What the wire carries; ``events`` are decoded one by one afterwards."""

    events: list[msgspec.Raw] = []


class BatchSchema(_BatchHead):
    """Only for publishing the JSON Schema: the same envelope with typed events."""

    events: list[Event] = []


batch_decoder = msgspec.json.Decoder(Batch)
event_decoder = msgspec.json.Decoder(Event)


def json_schema() -> dict[str, Any]:
    schema = msgspec.json.schema(BatchSchema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://llmrum.dev/schemas/beacon.v1.json"
    schema["title"] = "llmrum beacon payload v1"
    schema["description"] = (
        "POST /rum/v1/beacon?key=<public_key>. At most 200 events a batch, 64 KiB on the "
        "wire and 1 MiB after gzip. Free text longer than the server's limits "
        f"({json.dumps(TEXT_LIMITS)}, tbt_gaps {MAX_TBT_GAPS}) is cut and flagged, not rejected. "
        f"A turn's times must run {' <= '.join(TURN_TIMES)} for those present "
        f"({TIME_ORDER_TOLERANCE_MS:g} ms tolerance), and every duration (those and the gaps "
        f"between tokens) stay under {MAX_TURN_MS / 3_600_000:g} hour; otherwise the server "
        "rejects the turn alone with an error starting with time_order."
    )
    return schema


if __name__ == "__main__":
    print(json.dumps(json_schema(), indent=2, sort_keys=True))
