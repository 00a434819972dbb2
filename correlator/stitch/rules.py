"""Stitching one trace, as plain functions of its raw rows (DESIGN.md §5, §6).

Nothing here reads the database or the clock, so the same rows always give the
same result, whatever order they arrived in: that is what makes the sweep
idempotent.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from rumserver.roles import GATEWAY, SPAN_KIND_SERVER

GATEWAY_TTFT_PRIORITY = (
    "gen_ai.response.time_to_first_chunk",
    "gen_ai.server.time_to_first_token",
    "event:",
)
MODEL_TTFT_SOURCES = ("gen_ai.latency.time_to_first_token", "gen_ai.server.time_to_first_token")
MAX_SKEW_MS = 24 * 3600 * 1000  # browser clocks minutes off are common; hours are not sane
# How far from a server time a browser time of the same moment may lie, and so how far
# around a trace's time its raw rows are looked for (day partitions: correlator.stitch.load).
WINDOW_SLACK_MS = MAX_SKEW_MS + 3_600_000


class SpanLike(Protocol):
    span_id: str
    parent_span_id: str
    kind: int
    role: str
    service: str
    start_ns: int
    end_ns: int
    ttft_s: float | None
    ttft_source: str
    queue_s: float | None
    input_tokens: int | None
    output_tokens: int | None
    request_model: str
    response_model: str


_SpanT = TypeVar("_SpanT", bound=SpanLike)


# --- clock skew ---------------------------------------------------------------


@dataclass(frozen=True)
class Skew:
    ms: float
    source: str
    # Half the width of the interval ``ms`` is the middle of; None when the interval
    # is open on one side (beacons alone only bound the skew from above).
    uncertainty_ms: float | None = None


@dataclass(frozen=True)
class ClockSample:
    """What one exchange says of θ, the server clock minus the browser clock:
    ``lo <= θ <= hi`` (``lo`` is -inf for a beacon). ``at_ms`` is when it was taken,
    on the browser's clock."""

    at_ms: float
    lo: float
    hi: float

    @property
    def width(self) -> float:
        return self.hi - self.lo


SAMPLE_WINDOW_MS = 3600 * 1000  # a turn's estimate uses its session's samples this close


def server_timing_sample(turn: dict[str, Any]) -> ClockSample | None:
    """The interval one request's Server-Timing echo puts θ in (DESIGN.md §10.3):
    the server received it after the browser sent it (t1 - t0 >= θ) and answered
    before the browser saw the answer (t2 - t3 <= θ). t1 = llmrum-now - total,
    t2 = llmrum-now on the server's clock; t0 = t_send and t3 = t_headers on the
    browser's. Time the request waited before the app saw it (a server queue) only
    widens the interval; it never moves the truth out of it."""
    entries = {e.get("name"): e for e in turn.get("server_timing") or [] if isinstance(e, dict)}
    now, total = entries.get("llmrum-now"), entries.get("total")
    t0, t3 = turn.get("t_send"), turn.get("t_headers")
    if not now or not isinstance(t0, int | float) or not isinstance(t3, int | float) or t3 < t0:
        return None
    try:
        t2 = float(now.get("description", ""))
        t1 = t2 - float((total or {}).get("duration") or 0.0)
    except (TypeError, ValueError):
        return None
    lo, hi = sorted((t2 - t3, t1 - t0))  # crossed only by rounding: a server slower than its RTT
    if not (math.isfinite(lo) and math.isfinite(hi)) or max(abs(lo), abs(hi)) > MAX_SKEW_MS:
        return None
    return ClockSample(float(t0), lo, hi)


def beacon_sample(sent_at_ms: float, delta_ms: float) -> ClockSample | None:
    """received_at - sent_at of a beacon = θ + its delivery time, which is never
    negative: an upper bound on θ (STANDARDS.md §7.3)."""
    if not math.isfinite(delta_ms) or abs(delta_ms) > MAX_SKEW_MS:
        return None
    return ClockSample(sent_at_ms, -math.inf, delta_ms)


def estimate_skew(turn: dict[str, Any], samples: Iterable[ClockSample]) -> Skew:
    """Server minus browser clock for this turn (DESIGN.md §10.3): the middle of the
    intersection of the intervals of its session's samples within an hour of it.
    Where they do not intersect (the browser's clock was changed), the narrowest
    intersection that keeps the turn's own sample (or, with none, the sample nearest
    in time). With beacons alone the interval is open below: the skew is its upper
    bound, the fastest delivery's."""
    own = server_timing_sample(turn)
    t_send = turn.get("t_send")
    at = float(t_send) if isinstance(t_send, int | float) else None
    near = [s for s in samples if at is None or abs(s.at_ms - at) <= SAMPLE_WINDOW_MS]
    if own is not None:
        near.append(own)
    if not near:
        return Skew(0.0, "none")
    lo, hi = max(s.lo for s in near), min(s.hi for s in near)
    if lo > hi:
        lo, hi = _narrowest_consistent(near, own, at)
    if lo == -math.inf:
        return Skew(hi, "beacon")
    return Skew((lo + hi) / 2, "server_timing", (hi - lo) / 2)


def _narrowest_consistent(
    samples: list[ClockSample], own: ClockSample | None, at: float | None
) -> tuple[float, float]:
    """Intersect, narrowest first, the samples that agree with the turn's own one
    (or with the nearest in time when the turn has none); skip those that do not."""
    if own is None:
        own = min(samples, key=lambda s: (abs(s.at_ms - at) if at is not None else 0.0, s.width))
    lo, hi = own.lo, own.hi
    for sample in sorted(samples, key=lambda s: (s.width, s.hi)):
        if max(lo, sample.lo) <= min(hi, sample.hi):
            lo, hi = max(lo, sample.lo), min(hi, sample.hi)
    return lo, hi


def tighten(
    skew: Skew, *, t_send: float, t_end: float, outcome: str, gateway: tuple[float, float] | None
) -> Skew:
    """Move the browser span (never the server's) so that it starts no later than
    the gateway's server span and, for completed and error turns, ends no earlier.

    Both are bounds on θ too (θ <= gateway start - t_send; θ >= gateway end - t_end),
    so the skew moves as little as they need: to the nearest θ they allow. Where that
    leaves the interval the samples gave, or there were none, the samples and the
    spans disagree and the Jaeger adjuster's rule decides instead: the gateway centred
    in the browser span by symmetric latency. Centring by default would be wrong
    whenever the latency is not symmetric: a request that waited 1.5 s in a server
    queue would move its browser span by 750 ms."""
    if gateway is None:
        return skew
    gs, ge = gateway
    must_contain = outcome in ("completed", "error") and (t_end - t_send) >= (ge - gs)
    # A stopped or abandoned turn's gateway span may outlive it: only the start matters.
    lo, hi = (ge - t_end if must_contain else -math.inf), gs - t_send
    if lo <= skew.ms <= hi:
        return skew
    nearest = min(max(skew.ms, lo), hi)
    sampled = _sampled_interval(skew)
    if sampled is not None and sampled[0] <= nearest <= sampled[1]:
        return Skew(nearest, f"{skew.source}+tightened", skew.uncertainty_ms)
    if must_contain:
        latency = ((t_end - t_send) - (ge - gs)) / 2
        centred = gs - latency - t_send
    else:
        centred = hi
    return Skew(centred, f"{skew.source}+tightened", skew.uncertainty_ms)


def _sampled_interval(skew: Skew) -> tuple[float, float] | None:
    """The interval of θ the samples allowed: unknown without samples."""
    if skew.uncertainty_ms is not None:
        return skew.ms - skew.uncertainty_ms, skew.ms + skew.uncertainty_ms
    if skew.source.startswith("beacon"):
        return -math.inf, skew.ms
    return None


# --- spans ----------------------------------------------------------------------


def linked_span_ids(spans: Sequence[SpanLike], browser_span_id: str) -> set[str]:
    """Ids of the spans that descend from the browser span (through any depth)."""
    parents = {s.span_id: s.parent_span_id for s in spans}
    linked: set[str] = set()
    for span in spans:
        seen: set[str] = set()
        current = span.span_id
        while current and current not in seen:
            seen.add(current)
            parent = parents.get(current, "")
            if parent == browser_span_id:
                linked.add(span.span_id)
                break
            current = parent
    return linked


class _ServerSpan(Protocol):
    """What ``gateway_server_span`` reads: the invariant check passes fewer columns."""

    @property
    def span_id(self) -> str: ...
    @property
    def parent_span_id(self) -> str: ...
    @property
    def kind(self) -> int: ...
    @property
    def role(self) -> str: ...
    @property
    def start_ns(self) -> int: ...


_ServerSpanT = TypeVar("_ServerSpanT", bound=_ServerSpan)


def gateway_server_span(spans: Sequence[_ServerSpanT], browser_span_id: str) -> _ServerSpanT | None:
    candidates = [s for s in spans if s.role == "gateway" and s.kind == SPAN_KIND_SERVER]
    direct = [s for s in candidates if s.parent_span_id == browser_span_id]
    chosen = direct or candidates
    return min(chosen, key=lambda s: (s.start_ns, s.span_id)) if chosen else None


def server_ttft(spans: Sequence[SpanLike], gateway: SpanLike | None) -> tuple[float | None, str]:
    """Gateway TTFT in ms and where it came from (DESIGN.md §5, first found wins)."""
    if gateway is None:
        return None, ""
    own = [s for s in spans if s.role == "gateway" and s.ttft_s is not None]
    for prefix in GATEWAY_TTFT_PRIORITY:
        found = [s for s in own if s.ttft_source.startswith(prefix)]
        if prefix == "event:":
            # Counted from the gateway server span's start: an event on another gateway
            # span from before that start is no first token of this request.
            found = [s for s in found if s.start_ns + (s.ttft_s or 0) * 1e9 >= gateway.start_ns]
        if not found:
            continue
        # The server span first, then the earliest client span.
        span = min(found, key=lambda s: (s is not gateway, s.start_ns, s.span_id))
        assert span.ttft_s is not None
        if prefix == "event:":
            # An event's time counts from the gateway server span's start.
            first_token_ns = span.start_ns + span.ttft_s * 1e9
            return (first_token_ns - gateway.start_ns) / 1e6, span.ttft_source
        return span.ttft_s * 1000, span.ttft_source
    return None, ""


def model_spans(spans: Sequence[SpanLike]) -> list[SpanLike]:
    found = [s for s in spans if s.role == "model"]
    servers = [s for s in found if s.kind == SPAN_KIND_SERVER]
    return sorted(servers or found, key=lambda s: (s.start_ns, s.span_id))


# --- the turn -------------------------------------------------------------------


def nearest_rank(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _usage(turn: dict[str, Any]) -> tuple[int | None, int | None]:
    usage = turn.get("usage") or {}
    out = usage.get("output_tokens", usage.get("completion_tokens"))
    inp = usage.get("input_tokens", usage.get("prompt_tokens"))
    return inp, out


def cached_input(turn: dict[str, Any]) -> tuple[int, int]:
    """(input tokens read from a prompt cache, those of them not in the usage's input
    count) as the stream's usage says. The beacon's usage holds flat counts only, so
    this is Anthropic's ``cache_read_input_tokens``, reported besides
    ``input_tokens`` (OpenAI's count is nested in ``prompt_tokens_details``, which
    the SDK does not keep: those turns' input all costs the input price)."""
    usage = turn.get("usage") or {}
    besides = usage.get("cache_read_input_tokens")
    if isinstance(besides, int) and besides > 0:
        return besides, besides
    return 0, 0


@dataclass(frozen=True)
class TurnMetrics:
    client_ttft_ms: float | None
    server_ttft_ms: float | None
    server_ttft_source: str
    model_ttft_ms: float | None
    queue_ms: float | None
    network_overhead_ms: float | None
    tbt_p50_ms: float | None
    tbt_p95_ms: float | None
    tbt_max_ms: float | None
    tpot_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    tokens_source: str
    model: str
    model_calls: int


def turn_metrics(
    turn: dict[str, Any], spans: Sequence[SpanLike], browser_span_id: str
) -> TurnMetrics:
    t_send, t_first = turn.get("t_send"), turn.get("t_first_token")
    client_ttft = t_first - t_send if t_first is not None and t_send is not None else None
    gateway = gateway_server_span(spans, browser_span_id)
    server_ms, server_source = server_ttft(spans, gateway)
    models = model_spans(spans)
    first_model = models[0] if models else None
    model_ttft = queue = None
    if first_model is not None:
        if first_model.ttft_s is not None and first_model.ttft_source in MODEL_TTFT_SOURCES:
            model_ttft = first_model.ttft_s * 1000
        if first_model.queue_s is not None:
            queue = first_model.queue_s * 1000
    network = client_ttft - server_ms if client_ttft is not None and server_ms is not None else None

    summary = turn.get("tbt_summary") or {}
    if all(key in summary for key in ("p50", "p95", "max")):
        p50, p95, gap_max = summary["p50"], summary["p95"], summary["max"]
    else:
        gaps = [g for g in turn.get("tbt_gaps") or [] if isinstance(g, int | float)]
        p50 = summary.get("p50", nearest_rank(gaps, 0.5))
        p95 = summary.get("p95", nearest_rank(gaps, 0.95))
        gap_max = summary.get("max", max(gaps) if gaps else None)

    gateway_calls = [s for s in spans if s.role == "gateway" and s.output_tokens is not None]
    stream_in, stream_out = _usage(turn)
    tokens: tuple[int | None, int | None, str]  # (input, output, where they came from)
    if first_model is not None and first_model.output_tokens is not None:
        tokens = (first_model.input_tokens, first_model.output_tokens, "model")
    elif gateway_calls:
        call = min(gateway_calls, key=lambda s: (s.start_ns, s.span_id))
        tokens = (call.input_tokens, call.output_tokens, "gateway")
    elif stream_out is not None:
        tokens = (stream_in, stream_out, "stream")
    elif turn.get("output_tokens") is not None:
        tokens = (None, turn["output_tokens"], "estimate")
    else:
        tokens = (None, None, "")
    output_tokens = tokens[1]
    t_last = turn.get("t_last_token")
    tpot = None
    if output_tokens and output_tokens > 1 and t_first is not None and t_last is not None:
        tpot = (t_last - t_first) / (output_tokens - 1)

    model = ""
    for span in [*models, *sorted(gateway_calls, key=lambda s: s.start_ns)]:
        model = span.response_model or span.request_model
        if model:
            break
    model = model or str(turn.get("model") or "")
    return TurnMetrics(
        client_ttft_ms=client_ttft,
        server_ttft_ms=server_ms,
        server_ttft_source=server_source,
        model_ttft_ms=model_ttft,
        queue_ms=queue,
        network_overhead_ms=network,
        tbt_p50_ms=p50,
        tbt_p95_ms=p95,
        tbt_max_ms=gap_max,
        tpot_ms=tpot,
        input_tokens=tokens[0],
        output_tokens=output_tokens,
        tokens_source=tokens[2],
        model=model[:128],
        model_calls=len(models),
    )


def server_only_metrics(spans: Sequence[_SpanT]) -> tuple[float | None, str]:
    """(server TTFT in ms, model) of a trace with server spans and no browser root,
    such as an API client's call. With no gateway among its services (the gateway is
    the service a browser called), the entry service, whose server span has no parent
    in the trace, stands for it, whatever its role (a client may call a model server
    directly): TTFT then comes from the same attributes and events as a browser
    turn's (``server_ttft``); the model as ``turn_metrics`` finds it."""
    seen: Sequence[_SpanT] = spans
    if not any(s.role == GATEWAY for s in spans):
        ids = {s.span_id for s in spans}
        entry = {
            s.service for s in spans if s.kind == SPAN_KIND_SERVER and s.parent_span_id not in ids
        }
        seen = [_as_gateway(s) if s.service in entry else s for s in spans]
    return turn_metrics({}, seen, "").server_ttft_ms, turn_metrics({}, spans, "").model


def _as_gateway(span: _SpanT) -> _SpanT:
    seen = copy.copy(span)  # the caller's span keeps its role
    seen.role = GATEWAY
    return seen


def propagation_cause(
    *,
    has_browser: bool,
    has_server: bool,
    turn: dict[str, Any] | None,
    root_has_remote_parent: bool,
) -> tuple[str, str]:
    """Which side of the trace is missing, and the likely reason (DESIGN.md §6)."""
    if has_browser and not has_server:
        error = str((turn or {}).get("error") or "").lower()
        status = (turn or {}).get("status")
        if "cors" in error or (turn or {}).get("outcome") == "error" and not status:
            return "no_server_spans", "cors_preflight_failed"
        return "no_server_spans", "backend_not_instrumented_or_header_not_forwarded"
    if has_server and not has_browser:
        if root_has_remote_parent:
            return "no_browser_root", "browser_beacon_missing"
        return "no_browser_root", "no_traceparent_from_browser"
    return "", ""
