"""Realistic generated traffic for ``manage.py demo_traffic``.

Sessions of real browsers (real user-agent strings, desktop, mobile and tablet,
the odd bot) chat with several models over the last days: completed, stopped,
errored and abandoned answers (some before the first token), regenerations and
edits, thumbs up and down, hallucination scores, browser clocks that are off,
and some unlinked traces (the browser's ``traceparent`` never reached the
gateway, so its turn has no server spans and the gateway's trace has no browser
root; API clients without a browser).

Everything goes in through llmrum's own ingest: beacon batches through
``beacon_ingest`` and OTLP protobuf requests through ``otlp_ingest``, with the same
validation as the endpoints; scores are checked with the scores endpoint's own
struct (``ScoreIn``) and written in bulk with their dirty marks. The timing
comes from ``demo.simulator``, the model the live demo streams with.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
from django.db import connection, transaction
from django.utils import timezone
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from demo.simulator import MODELS, AnswerPlan, Model, pick_model, plan_answer
from demo.telemetry import GATEWAY_RESOURCE
from rumserver.applications import ingest_app_by_public_key
from rumserver.ingest.dirty import mark_dirty
from rumserver.ingest.scores import ScoreIn
from rumserver.ingest.services import beacon_ingest, otlp_ingest
from rumserver.models import Application, Score

_score_decoder = msgspec.json.Decoder(ScoreIn)
SERVER, CLIENT = Span.SpanKind.SPAN_KIND_SERVER, Span.SpanKind.SPAN_KIND_CLIENT
CHAT_PATH = "/v1/chat/completions"

# (user agent, weight, round trip ms range): real strings, parsed by llmrum as usual.
USER_AGENTS: tuple[tuple[str, float, tuple[float, float]], ...] = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36", 0.30, (20, 90)),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/130.0.0.0 Safari/537.36", 0.14, (15, 70)),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/18.1 Safari/605.1.15", 0.09, (15, 70)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
     0.07, (20, 100)),
    ("Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0", 0.03, (20, 100)),
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0", 0.07, (20, 90)),
    ("Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
     "Gecko) Version/18.1 Mobile/15E148 Safari/604.1", 0.13, (60, 260)),
    ("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/131.0.6778.81 Mobile Safari/537.36", 0.09, (60, 300)),
    ("Mozilla/5.0 (Linux; Android 14; SAMSUNG SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) "
     "SamsungBrowser/26.0 Chrome/122.0.0.0 Mobile Safari/537.36", 0.04, (70, 320)),
    ("Mozilla/5.0 (iPad; CPU OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.6 Mobile/15E148 Safari/604.1", 0.03, (40, 180)),
    ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", 0.01, (30, 60)),
)  # fmt: skip

# Sessions per hour of the (UTC) day: a working-day peak over a quiet night.
HOUR_WEIGHTS = [0.25 + 0.75 * math.exp(-(((h + 0.5 - 14) / 4.5) ** 2)) for h in range(24)]
# The chat page's own bugs (message, top frames (function, column), weight), in one
# session in PAGE_ERROR_RATE: the errors page groups them by message and top frame.
PAGE_ERROR_RATE = 0.04
PAGE_ERRORS: tuple[tuple[str, tuple[tuple[str, int], ...], float], ...] = (
    ("TypeError: Cannot read properties of undefined (reading 'content')",
     (("renderDelta", 48213), ("onChunk", 47102), ("Stream.read", 12877)), 0.45),
    ("ResizeObserver loop completed with undelivered notifications.",
     (("scrollToBottom", 51090), ("ResizeObserver.observe", 50811)), 0.3),
    ("SyntaxError: Unexpected end of JSON input",
     (("JSON.parse", 1), ("parseEvent", 46650), ("onChunk", 47102)), 0.15),
    ("ChunkLoadError: Loading chunk 412 failed.",
     (("requireEnsure", 2290), ("openSettings", 60144)), 0.1),
)  # fmt: skip
# Smaller (faster) models make things up more often: the share of scored answers an
# evaluator flags (hallucination score >= 0.5).
HALLUCINATION_RATE = {m.name: 0.05 + 0.07 * (m.tpot_s < 0.035) for m in MODELS}


@dataclass
class TrafficOptions:
    turns: int
    days: float = 7.0
    seed: int | None = None
    browser_only_rate: float = 0.04  # traceparent never reached the gateway
    api_only_rate: float = 0.03  # server traces of API clients, per browser turn
    chunk_sessions: int = 60


@dataclass
class TrafficResult:
    turns: int = 0
    sessions: int = 0
    spans: int = 0
    server_only_traces: int = 0
    scores: int = 0
    events: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)


def _hex(rng: random.Random, nbytes: int) -> str:
    value = rng.getrandbits(nbytes * 8) or 1
    return f"{value:0{nbytes * 2}x}"


def _any(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, list | tuple):
        return AnyValue(array_value=ArrayValue(values=[_any(v) for v in value]))
    return AnyValue(string_value=str(value))


def _attrs(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=_any(v)) for k, v in values.items()]


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


class _Spans:
    """Spans of one OTLP request, grouped by service (one ResourceSpans each)."""

    def __init__(self) -> None:
        self.by_service: dict[str, tuple[dict[str, Any], list[Span]]] = {}
        self.count = 0

    def add(self, resource: dict[str, Any], span: Span) -> None:
        service = resource["service.name"]
        self.by_service.setdefault(service, (resource, []))[1].append(span)
        self.count += 1

    def request(self) -> bytes:
        request = ExportTraceServiceRequest()
        for resource, spans in self.by_service.values():
            rs: ResourceSpans = request.resource_spans.add()
            rs.resource.attributes.extend(_attrs(resource))
            scope = rs.scope_spans.add()
            scope.scope.name = "llmrum.demo_traffic"
            scope.scope.version = "1.0.0"
            scope.spans.extend(spans)
        return request.SerializeToString()


def _model_resource(model: Model) -> dict[str, Any]:
    return {
        "service.name": f"vllm-{model.name.split('-instruct')[0]}",
        "service.version": "0.11.0",
        "deployment.environment.name": "production",
        "host.name": f"gpu-{model.name[:5]}-{len(model.name) % 3 + 1}",
    }


def _span(
    *,
    trace_id: str,
    span_id: str,
    parent: str,
    name: str,
    kind: int,
    start_ms: float,
    end_ms: float,
    attributes: dict[str, Any],
    error: str = "",
    events: list[tuple[str, float]] | None = None,
) -> Span:
    span = Span(
        trace_id=bytes.fromhex(trace_id),
        span_id=bytes.fromhex(span_id),
        parent_span_id=bytes.fromhex(parent) if parent else b"",
        name=name,
        kind=kind,
        start_time_unix_nano=_ns(start_ms),
        end_time_unix_nano=_ns(max(end_ms, start_ms)),
    )
    span.attributes.extend(_attrs(attributes))
    for event_name, at_ms in events or []:
        event = span.events.add()
        event.name, event.time_unix_nano = event_name, _ns(at_ms)
    if error:
        span.status.code = Status.StatusCode.STATUS_CODE_ERROR
        span.status.message = error
    return span


@dataclass
class _Turn:
    """One chat request, timed on the server's (true) clock in ms."""

    trace_id: str
    span_id: str
    event: dict[str, Any]
    end_ms: float
    outcome: str


@dataclass
class _Served:
    """The server side of one request on the server's clock (ms): the gateway's
    server span, its GenAI client span (None: answered by its own rate limit), the
    model's span (vLLM's, or the vendor's unseen one) and the tokens."""

    gw_start: float
    gw_end: float
    headers_at: float  # the answer's headers leave the gateway
    client_start: float | None = None
    client_end: float = 0.0
    model_start: float = 0.0
    model_end: float = 0.0
    hop: float = 0.0  # gateway <-> model, one way
    made: list[float] = field(default_factory=list)  # tokens out of the model
    received: list[float] = field(default_factory=list)  # at the gateway, sent on at once


def _serve(rng: random.Random, plan: AnswerPlan, gw_start: float) -> _Served:
    """The gateway and the model answering a client that stays to the end: each span
    inside its parent, each first token inside its spans."""
    checked = gw_start + rng.uniform(2, 12)  # auth, routing, prompt template
    if plan.error_status == 429:
        return _Served(gw_start, gw_end=checked, headers_at=checked + rng.uniform(0.1, 0.6))
    hop = rng.uniform(0.3, 3) if plan.model.self_hosted else rng.uniform(8, 40)
    served = _Served(gw_start, gw_end=0.0, headers_at=0.0, client_start=checked, hop=hop)
    served.model_start = checked + hop
    if plan.error_status == 500:  # the model server fails once the request leaves its queue
        served.model_end = served.model_start + plan.queue_s * 1000 + rng.uniform(0.2, 2)
        served.client_end = served.model_end + hop
        served.gw_end = served.client_end + rng.uniform(0.3, 1.5)
        # The JSON error leaves after the gateway ended its spans, as the live gateway does.
        served.headers_at = served.gw_end + rng.uniform(0.1, 0.6)
        return served
    served.headers_at = checked + rng.uniform(0.5, 2)  # SSE: headers before any token
    made = [served.model_start + plan.ttft_s * 1000]
    for gap in plan.gaps_s:
        made.append(made[-1] + gap * 1000)
    served.made = made
    served.received = [t + hop for t in made]
    served.model_end = made[-1] + rng.uniform(0.3, 2)
    served.client_end = served.model_end + hop + rng.uniform(0.1, 0.5)  # the usage chunk
    served.gw_end = served.client_end + rng.uniform(0.2, 1.5)  # usage and [DONE] written
    return served


def _close(rng: random.Random, served: _Served, close_at: float) -> _Served:
    """The browser closed the connection, which the gateway learns of at ``close_at``:
    it notices at its next write, closes the model's stream, and the model stops
    once that reaches it. Unchanged when the answer had been sent by then."""
    noticed = next((i for i, t in enumerate(served.received) if t >= close_at), None)
    if noticed is None:
        return served
    write = served.received[noticed]
    abort_at = write + rng.uniform(0.05, 0.5) + served.hop
    served.received = served.received[: noticed + 1]
    served.made = [t for t in served.made if t <= abort_at]
    # The client span waits for the model's stream to close (the model span ends first).
    served.model_end = min(served.model_end, abort_at + rng.uniform(0.2, 1))
    served.client_end = max(write, served.model_end + served.hop) + rng.uniform(0.1, 0.5)
    served.gw_end = served.client_end + rng.uniform(0.2, 1)
    return served


class TrafficGenerator:
    def __init__(self, app: Application, options: TrafficOptions, now: datetime) -> None:
        self.app = app
        found = ingest_app_by_public_key(app.public_key)
        assert found is not None
        self.ingest_app = found
        self.options = options
        self.rng = random.Random(options.seed)
        # Page errors draw from their own stream, so adding them left the traffic of a
        # seed as it was.
        self.error_rng = random.Random(None if options.seed is None else f"{options.seed}-errors")
        self.now = now
        self.now_ms = now.timestamp() * 1000
        origins = [o for o in app.allowed_origins or [] if o not in ("*", "null") and "*" not in o]
        self.origin = origins[0] if origins else "https://chat.example.com"
        self.result = TrafficResult()

    # --- the plan of one session --------------------------------------------------

    def _session_start_ms(self) -> float:
        """A time in the last ``days``, busier in the (UTC) working day. Always the same
        number of draws, so a seed gives the same sessions whatever the time now."""
        rng = self.rng
        if self.options.days < 2:
            return self.now_ms - 600_000 - rng.random() * self.options.days * 86_400_000
        day = rng.randrange(math.ceil(self.options.days))
        hour = rng.choices(range(24), weights=HOUR_WEIGHTS)[0]
        midnight = self.now_ms - self.now_ms % 86_400_000
        at = midnight - day * 86_400_000 + (hour + rng.random()) * 3_600_000
        while at > self.now_ms - 600_000:  # not in the future, nor in the last minutes
            at -= 86_400_000
        return max(at, self.now_ms - self.options.days * 86_400_000)

    def sessions(self) -> Iterator[tuple[dict[str, Any], list[_Turn], _Spans, list[dict]]]:
        left = self.options.turns
        while left > 0:
            n = min(left, max(1, int(self.rng.expovariate(1 / 4.0)) + 1), 25)
            session = self._session(n)
            left -= len(session[1])  # a user who leaves mid-answer ends the session early
            yield session

    def _session(self, n_turns: int) -> tuple[dict[str, Any], list[_Turn], _Spans, list[dict]]:
        rng = self.rng
        ua, _, rtt_range = rng.choices(USER_AGENTS, weights=[u[1] for u in USER_AGENTS])[0]
        rtt = rng.uniform(*rtt_range)
        # Server minus browser clock: most browsers are close, some seconds or minutes off.
        roll = rng.random()
        skew = (
            rng.gauss(0, 80) if roll < 0.8 else rng.uniform(-5000, 5000) if roll < 0.95
            else rng.choice((-1, 1)) * rng.uniform(60_000, 600_000)
        )  # fmt: skip
        server_timing = rng.random() < 0.7  # same-origin APIs let the SDK read it
        session_id = f"s-{_hex(rng, 12)}"
        conversation = f"c-{_hex(rng, 8)}"
        model = pick_model(rng)
        start = self._session_start_ms()
        page = f"{self.origin}/c/{conversation}"
        events: list[dict[str, Any]] = [
            {"id": _hex(rng, 16), "type": "page_view", "ts": start - skew, "url": page},
        ]
        for name, value in (
            ("TTFB", rng.lognormvariate(5.5, 0.5)), ("FCP", rng.lognormvariate(6.8, 0.4)),
            ("LCP", rng.lognormvariate(7.3, 0.4)), ("CLS", rng.expovariate(20)),
            ("INP", rng.lognormvariate(4.8, 0.6)),
        ):  # fmt: skip
            events.append({"id": _hex(rng, 16), "type": "vital", "ts": start + 2000 - skew,
                           "name": name, "value": round(value, 4)})  # fmt: skip
        turns: list[_Turn] = []
        spans = _Spans()
        scores: list[dict[str, Any]] = []
        t = start + rng.uniform(3000, 30_000)
        previous: _Turn | None = None
        regenerate_of: str | None = None
        intent_correction = False
        index = 0
        for _ in range(n_turns):
            if rng.random() < 0.05:  # a new conversation in the same session
                conversation, index = f"c-{_hex(rng, 8)}", 0
            if rng.random() < 0.1:
                model = pick_model(rng)
            turn = self._turn(
                t_send=t, model=model, rtt=rtt, skew=skew, server_timing=server_timing,
                session_id=session_id, conversation=conversation, index=index,
                regenerate_of=regenerate_of, intent_correction=intent_correction, spans=spans,
            )  # fmt: skip
            turns.append(turn)
            events.append(turn.event)
            outcome = turn.outcome
            self.result.outcomes[outcome] = self.result.outcomes.get(outcome, 0) + 1
            after = turn.end_ms + rng.uniform(800, 6000)
            # Feedback, copy, and what the user does next.
            if outcome == "completed":
                roll = rng.random()
                if roll < 0.12 or roll > 0.95:
                    value = "up" if roll < 0.12 else "down"
                    events.append({"id": _hex(rng, 16), "type": "feedback", "ts": after - skew,
                                   "value": value, "turn_span_id": turn.span_id,
                                   "trace_id": turn.trace_id})  # fmt: skip
                if rng.random() < 0.06:
                    events.append(self._action("copy", after + 300 - skew, turn))
                if rng.random() < 0.3:
                    # An evaluator's score: mostly low, now and then clearly made up.
                    if rng.random() < HALLUCINATION_RATE[model.name]:
                        value = rng.uniform(0.5, 1.0)
                    else:
                        value = min(0.49, rng.betavariate(1.2, 6.0))
                    scores.append({"trace_id": turn.trace_id, "name": "hallucination",
                                   "value": round(value, 3), "at": turn.end_ms + 60_000})  # fmt: skip
            regenerate_of, intent_correction = None, False
            wants_regenerate = {"completed": 0.07, "stopped": 0.35, "error": 0.5}.get(outcome, 0)
            roll = rng.random()
            if roll < wants_regenerate:
                regenerate_of = turn.span_id
                events.append(self._action("regenerate", after - skew, turn))
                t = after + rng.uniform(100, 600)
            else:
                if roll > 0.93:
                    intent_correction = True
                    events.append(self._action("edit", after - skew, turn))
                t = after + rng.uniform(5_000, 90_000)
                index += 1
            previous = turn
            if outcome == "abandoned":
                break  # the user left
        assert previous is not None
        events += self._page_errors(turns, skew)
        end = max(turn.end_ms for turn in turns) + rng.uniform(50, 1500)
        batch = {
            "v": 1,
            "sdk": {"name": "llmrum", "version": "0.1.0"},
            "sent_at": end - skew,
            "session": {"id": session_id, "started_at": start - skew},
            "page": {"url": page, "referrer": ""},
            "user": {"id": f"u-{_hex(rng, 6)}"},
            "events": events,
        }
        meta = {"ua": ua, "received_ms": end + rtt / 2}
        return {"batch": batch, **meta}, turns, spans, scores

    def _page_errors(self, turns: list[_Turn], skew: float) -> list[dict[str, Any]]:
        """Now and then one of the chat page's own JavaScript errors, while a turn
        streams: the same few bugs in many sessions, as a real page has them."""
        rng = self.error_rng
        if rng.random() >= PAGE_ERROR_RATE:
            return []
        message, frames = rng.choices(PAGE_ERRORS, weights=[e[2] for e in PAGE_ERRORS])[0][:2]
        turn = rng.choice(turns)
        bundle = f"{self.origin}/assets/chat-4f2a91c.js"
        stack = "\n".join(f"    at {function} ({bundle}:1:{column})" for function, column in frames)
        return [{
            "id": _hex(rng, 16), "type": "error", "ts": turn.end_ms - skew - rng.uniform(0, 200),
            "message": message, "stack": f"{message}\n{stack}", "source": bundle,
            "lineno": 1, "colno": frames[0][1],
        }]  # fmt: skip

    def _action(self, name: str, ts: float, turn: _Turn) -> dict[str, Any]:
        return {"id": _hex(self.rng, 16), "type": "action", "ts": ts, "name": name,
                "turn_span_id": turn.span_id, "trace_id": turn.trace_id}  # fmt: skip

    def _turn(
        self,
        *,
        t_send: float,
        model: Model,
        rtt: float,
        skew: float,
        server_timing: bool,
        session_id: str,
        conversation: str,
        index: int,
        regenerate_of: str | None,
        intent_correction: bool,
        spans: _Spans,
    ) -> _Turn:
        """One chat request, timed on the server's (true) clock, then written on the
        browser's (``skew`` off). Every time follows from what caused it: the gateway
        starts when the request arrives, tokens reach the browser after the gateway sent
        them, a stop reaches the gateway before it stops (DESIGN.md §10.4)."""
        rng = self.rng
        plan = plan_answer(rng, model)
        trace_id, browser_span = _hex(rng, 16), _hex(rng, 8)
        # Each direction on its own: networks are not symmetric (the skew estimate's
        # uncertainty covers that).
        up, down = rtt / 2 * rng.uniform(0.8, 1.3), rtt / 2 * rng.uniform(0.8, 1.3)
        propagated = rng.random() >= self.options.browser_only_rate
        # The browser's fetch never got an answer: a CORS or network failure.
        network_error = not propagated and rng.random() < 0.3
        served = _serve(rng, plan, t_send + up)
        # Tokens reach the browser one way later, delayed now and then, never reordered.
        arrivals: list[float] = []
        for sent in served.received:
            arrival = sent + down + min(rng.expovariate(1 / 3), 40)
            arrivals.append(max(arrival, arrivals[-1] + 0.05) if arrivals else arrival)
        headers_seen: float | None = served.headers_at + down
        outcome, status, error = "completed", 200, None
        roll = rng.random()
        stop_after: int | None = None
        if network_error:
            outcome, status, error = "error", None, "TypeError: Failed to fetch"
        elif plan.error_status:
            outcome, status, error = "error", plan.error_status, f"HTTP {plan.error_status}"
        elif roll < 0.08:
            outcome, stop_after = "stopped", rng.randint(1, max(1, plan.output_tokens - 1))
        elif roll < 0.10:
            outcome, stop_after = "abandoned", rng.randint(1, max(1, plan.output_tokens - 1))
        elif roll < 0.115:
            outcome, stop_after = "abandoned", 0  # left before the first token

        to_browser = arrivals
        if network_error:
            to_browser, headers_seen = [], None
            browser_end = t_send + rng.uniform(5, 400)
        elif plan.error_status:
            to_browser = []
            assert headers_seen is not None
            browser_end = headers_seen + rng.uniform(0.5, 5)  # the short JSON error body
        elif stop_after is not None:
            # The user stops or leaves after seeing ``stop_after`` tokens, before the next.
            to_browser = arrivals[:stop_after]
            seen = to_browser[-1] if to_browser else t_send + 50
            upcoming = arrivals[stop_after] if stop_after < len(arrivals) else seen + 900
            browser_end = seen + rng.uniform(0.0, 0.99) * min(upcoming - seen, 900.0)
            if headers_seen is not None and headers_seen > browser_end:
                headers_seen = None  # gone before the answer's headers came
            served = _close(rng, served, browser_end + up)  # when the close reaches it
        else:
            # The body ends one way after the gateway's last write, which closes its span.
            browser_end = max(served.gw_end + down, arrivals[-1]) + rng.uniform(0.3, 4)

        b = -skew  # server time -> browser clock
        gaps = [to_browser[i] - to_browser[i - 1] for i in range(1, len(to_browser))]
        event: dict[str, Any] = {
            "id": _hex(rng, 16),
            "type": "turn",
            "ts": browser_end + b,
            "trace_id": trace_id,
            "span_id": browser_span,
            "conversation_id": conversation,
            "turn_index": index,
            "url": f"{self.origin}{CHAT_PATH}",
            "method": "POST",
            "status": status,
            "t_send": t_send + b,
            "t_headers": None if headers_seen is None else headers_seen + b,
            "t_first_token": to_browser[0] + b if to_browser else None,
            "t_last_token": to_browser[-1] + b if to_browser else None,
            "t_end": browser_end + b,
            "chunks": len(to_browser) + (3 if outcome == "completed" else 1 if to_browser else 0),
            "tbt_gaps": [round(g, 2) for g in gaps[:512]],
            "tbt_summary": _summary(gaps),
            "output_tokens": len(to_browser),
            "tokens_estimated": outcome != "completed",
            "model": model.name if to_browser else None,
            "outcome": outcome,
            "regenerate_of": regenerate_of,
            "intent_correction": intent_correction,
            "error": error,
        }
        if outcome == "completed":
            event["usage"] = {"prompt_tokens": plan.input_tokens,
                              "completion_tokens": plan.output_tokens,
                              "total_tokens": plan.input_tokens + plan.output_tokens}  # fmt: skip
        gw_span = _hex(rng, 8)
        if server_timing and propagated and headers_seen is not None:
            # The helper's echo: its time when the headers left, and how long it had the
            # request by then (t1 = the gateway's start).
            event["server_timing"] = [
                {"name": "trace", "description": f"00-{trace_id}-{gw_span}-01"},
                {"name": "total", "duration": round(served.headers_at - served.gw_start, 3)},
                {"name": "llmrum-now", "description": f"{served.headers_at:.3f}"},
            ]
        if not network_error:
            server_trace = trace_id if propagated else _hex(rng, 16)
            parent = browser_span if propagated else ""
            self._server_spans(
                spans, plan=plan, served=served, trace_id=server_trace, parent=parent,
                gw_span=gw_span, status=status or 0, session_id=session_id,
                conversation=conversation,
            )  # fmt: skip
            if not propagated:
                self.result.server_only_traces += 1
        if rng.random() < self.options.api_only_rate:  # an API client, no browser at all
            api_plan = plan_answer(rng, model, error_rate=0.02)
            api_served = _serve(rng, api_plan, t_send + rng.uniform(-60_000, 60_000))
            self._server_spans(
                spans, plan=api_plan, served=api_served, trace_id=_hex(rng, 16), parent="",
                gw_span=_hex(rng, 8), status=api_plan.error_status or 200, session_id="",
                conversation="",
            )  # fmt: skip
            self.result.server_only_traces += 1
        end = browser_end if network_error else max(browser_end, served.gw_end)
        return _Turn(trace_id, browser_span, event, end, outcome)

    def _server_spans(
        self,
        spans: _Spans,
        *,
        plan: AnswerPlan,
        served: _Served,
        trace_id: str,
        parent: str,
        gw_span: str,
        status: int,
        session_id: str,
        conversation: str,
    ) -> None:
        """The gateway's server and GenAI client spans, and a self-hosted model's
        ``llm_request``, each inside its parent, each first token inside its span."""
        rng = self.rng
        model = plan.model
        attributes: dict[str, Any] = {
            "http.request.method": "POST",
            "http.route": CHAT_PATH,
            "url.path": CHAT_PATH,
            "http.response.status_code": status,
        }
        if session_id:
            attributes["session.id"] = session_id
        if served.received:
            attributes["gen_ai.response.time_to_first_chunk"] = (
                served.received[0] - served.gw_start
            ) / 1000
        error = f"HTTP {status}" if status >= 400 else ""
        if error:
            attributes["error.type"] = str(status)
        spans.add(GATEWAY_RESOURCE, _span(
            trace_id=trace_id, span_id=gw_span, parent=parent, name=f"POST {CHAT_PATH}",
            kind=SERVER, start_ms=served.gw_start, end_ms=served.gw_end, attributes=attributes,
            error=error,
        ))  # fmt: skip
        if served.client_start is None:
            return  # the gateway's own rate limit: the model is never called
        client_span = _hex(rng, 8)
        client_attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": model.provider,
            "gen_ai.request.model": model.name,
            "gen_ai.request.stream": True,
            "gen_ai.response.model": model.name,
            "gen_ai.response.id": plan.request_id,
            "gen_ai.usage.input_tokens": plan.input_tokens,
            "gen_ai.usage.output_tokens": len(served.received),
            "server.address": "vllm.internal" if model.self_hosted else "api.example.com",
        }
        if served.received:
            client_attributes["gen_ai.response.time_to_first_chunk"] = (
                served.received[0] - served.client_start
            ) / 1000
        if conversation:
            client_attributes["gen_ai.conversation.id"] = conversation
        spans.add(GATEWAY_RESOURCE, _span(
            trace_id=trace_id, span_id=client_span, parent=gw_span, name=f"chat {model.name}",
            kind=CLIENT, start_ms=served.client_start, end_ms=served.client_end,
            attributes=client_attributes, error=error,
        ))  # fmt: skip
        if not model.self_hosted:
            return
        made = served.made
        model_attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.request.model": model.name,
            "gen_ai.response.model": model.name,
            "gen_ai.request.id": plan.request_id,
            "gen_ai.request.max_tokens": 1024,
            "gen_ai.usage.prompt_tokens": plan.input_tokens,
            "gen_ai.usage.completion_tokens": len(made),
            "gen_ai.usage.input_tokens": plan.input_tokens,
            "gen_ai.usage.output_tokens": len(made),
            "gen_ai.latency.time_in_queue": plan.queue_s,
            "gen_ai.latency.e2e": (served.model_end - served.model_start) / 1000,
        }
        if made:
            scheduled = served.model_start + plan.queue_s * 1000
            model_attributes.update({
                "gen_ai.latency.time_to_first_token": (made[0] - served.model_start) / 1000,
                "gen_ai.latency.time_in_model_prefill": (made[0] - scheduled) / 1000,
                "gen_ai.latency.time_in_model_decode": (made[-1] - made[0]) / 1000,
            })  # fmt: skip
        spans.add(_model_resource(model), _span(
            trace_id=trace_id, span_id=_hex(rng, 8), parent=client_span, name="llm_request",
            kind=SERVER, start_ms=served.model_start, end_ms=served.model_end,
            attributes=model_attributes, error=error if status == 500 else "",
        ))  # fmt: skip

    # --- writing it through llmrum's ingest -------------------------------------------

    def run(self, progress: Callable[[int], None] = lambda n: None) -> TrafficResult:
        relaxed_commits()
        chunk: list[Any] = []
        for session in self.sessions():
            chunk.append(session)
            if len(chunk) >= self.options.chunk_sessions:
                self._write(chunk)
                progress(sum(len(s[1]) for s in chunk))
                chunk = []
        if chunk:
            self._write(chunk)
            progress(sum(len(s[1]) for s in chunk))
        return self.result

    def _received(self, ms: float) -> datetime:
        return self.now - timedelta(milliseconds=max(0.0, self.now_ms - ms))

    def _write(self, chunk: list[tuple[dict[str, Any], list[_Turn], _Spans, list[dict]]]) -> None:
        merged = _Spans()
        latest = 0.0
        for _, turns, spans, _ in chunk:
            for resource, rows in spans.by_service.values():
                for row in rows:
                    merged.add(resource, row)
            latest = max([latest, *(t.end_ms for t in turns)])
        # Each ingest call commits on its own, as the endpoints do: on SQLite a chunk-wide
        # transaction held the write lock through all its parsing, and the workers queued.
        if merged.count:
            result = otlp_ingest(
                app=self.ingest_app, body=merged.request(),
                media_type="application/x-protobuf", now=self._received(latest + 5000),
            )  # fmt: skip
            self.result.spans += result.accepted_spans
        pending_scores: list[dict[str, Any]] = []
        for meta, turns, _, scores in chunk:
            beacon = beacon_ingest(
                app=self.ingest_app, body=json.dumps(meta["batch"]).encode(),
                user_agent=meta["ua"], client_ip=None, now=self._received(meta["received_ms"]),
            )  # fmt: skip
            self.result.events += beacon.accepted
            self.result.sessions += 1
            self.result.turns += len(turns)
            pending_scores += scores
        # Scores are checked as POST /api/v1/scores checks them (its own struct), then
        # written in bulk with their dirty marks, in one transaction as score_record does.
        rows = []
        for score in pending_scores:
            at = score.pop("at")
            checked = _score_decoder.decode(json.dumps(score).encode())
            rows.append(Score(app_id=self.ingest_app.id, trace_id=checked.trace_id,
                              name=checked.name, value=checked.value, comment=checked.comment,
                              received_at=self._received(at)))  # fmt: skip
        if rows:
            now = timezone.now()
            with transaction.atomic():
                Score.objects.bulk_create(rows, batch_size=500)
                traces = [r.trace_id for r in rows]
                with connection.cursor() as cursor:
                    mark_dirty(cursor, app_id=self.ingest_app.id, trace_ids=traces, now=now)
        self.result.scores += len(rows)


def relaxed_commits() -> None:
    """Generated demo data on PostgreSQL: do not wait for each commit's WAL flush (a
    crash may lose the last commits, never consistency). Several times faster; this
    connection only."""
    if connection.vendor == "postgresql" and not connection.in_atomic_block:
        with connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit TO off")


def _summary(gaps: list[float]) -> dict[str, Any]:
    if not gaps:
        return {"count": 0}
    ordered = sorted(gaps)

    def rank(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 2)

    return {"count": len(gaps), "p50": rank(0.5), "p95": rank(0.95), "max": round(ordered[-1], 2)}
