// What the SDK recorded of an ended span, in the shape tests/clients/trace_api.py
// compares with llmrum's answer (times as nanosecond strings: exact past 2^53).
const ns = ([s, n]) => (BigInt(s) * 1_000_000_000n + BigInt(n)).toString();

export function recordSpan(span) {
  return {
    trace_id: span.spanContext().traceId,
    span_id: span.spanContext().spanId,
    parent_span_id: span.parentSpanContext?.spanId ?? "",
    name: span.name,
    kind: span.kind + 1, // OTLP's number: the JS SpanKind enum starts at INTERNAL = 0, OTLP's at 1
    start_ns: ns(span.startTime),
    end_ns: ns(span.endTime),
    attributes: span.attributes,
    status: { code: span.status.code, message: span.status.message ?? "" },
    events: span.events.map((e) => ({ name: e.name, time_ns: ns(e.time), attributes: e.attributes })),
  };
}

// A span processor that keeps that record of every span as it ends.
export function recorder(records) {
  return {
    onStart() {},
    onEnd: (span) => records.push(recordSpan(span)),
    forceFlush: async () => {},
    shutdown: async () => {},
  };
}
