// A Node.js gateway as OpenTelemetry JS users write one: the real OTLP/HTTP exporter
// (JSON or protobuf) behind a BatchSpanProcessor. Exports one known trace in two
// batches and prints what the SDK recorded, for the test to compare with llmrum's API.
//
//   node otel_node_export.mjs '{"protocol": "json", "url": "...", "headers": {...},
//                               "compression": "gzip"}'
// Without "url" / "headers" the exporter reads OTEL_EXPORTER_OTLP_* like any app would.
//
// The packages come from the node_modules of the working directory: tests/clients
// (the 2.x SDK line, sdk-trace-base) or tests/clients/sdk3 (the 3.x line, whose
// sdk-trace replaces sdk-trace-base and names BasicTracerProvider TracerProvider).
import { createRequire } from "node:module";
import { join } from "node:path";
import { recorder } from "./otel_record.mjs";

const require = createRequire(join(process.cwd(), "package.json"));
const { SpanKind, SpanStatusCode, context, trace } = require("@opentelemetry/api");
const { OTLPTraceExporter: JsonExporter } = require("@opentelemetry/exporter-trace-otlp-http");
const { OTLPTraceExporter: ProtoExporter } = require("@opentelemetry/exporter-trace-otlp-proto");
const { resourceFromAttributes } = require("@opentelemetry/resources");
const sdk = (() => {
  try {
    return require("@opentelemetry/sdk-trace-base");
  } catch {
    return require("@opentelemetry/sdk-trace");
  }
})();
const TracerProvider = sdk.BasicTracerProvider ?? sdk.TracerProvider;

const config = JSON.parse(process.argv[2] ?? "{}");
const options = { timeoutMillis: 10_000 };
if (config.url) options.url = config.url;
if (config.headers) options.headers = config.headers;
if (config.compression) options.compression = config.compression;
const exporter =
  config.protocol === "proto" ? new ProtoExporter(options) : new JsonExporter(options);

const recorded = [];
const provider = new TracerProvider({
  resource: resourceFromAttributes({
    "service.name": "node-gateway",
    "service.version": "1.4.2",
    "llmrum.role": "gateway",
  }),
  spanProcessors: [
    recorder(recorded),
    new sdk.BatchSpanProcessor(exporter, { scheduledDelayMillis: 60_000 }),
  ],
});
const tracer = provider.getTracer("tests.clients.node", "0.0.1");

// Times an HTTP server would not produce by itself, so the round trip is exact to the ns.
const base = Math.floor(Date.now() / 1000) - 30;
const at = (s, ns) => [base + s, ns];

const root = tracer.startSpan("POST /api/chat", {
  kind: SpanKind.SERVER,
  startTime: at(0, 123_456_789),
  attributes: {
    "http.request.method": "POST",
    "http.response.status_code": 200,
    "url.path": "/api/chat",
    ratio: 0.25,
    flag: true,
    tags: ["a", "b"],
    ints: [1, 2, 3],
    greeting: "héllo ✓ 日本",
  },
});
const inRoot = trace.setSpan(context.active(), root);

const model = tracer.startSpan(
  "chat gpt-4o-mini",
  {
    kind: SpanKind.CLIENT,
    startTime: at(0, 200_000_001),
    attributes: {
      "gen_ai.operation.name": "chat",
      "gen_ai.provider.name": "openai",
      "gen_ai.request.model": "gpt-4o-mini",
      "gen_ai.response.model": "gpt-4o-mini-2024-07-18",
      "gen_ai.usage.input_tokens": 812,
      "gen_ai.usage.output_tokens": 57,
      "gen_ai.request.temperature": 0.7,
    },
  },
  inRoot,
);
model.addEvent("first_token", { index: 0 }, at(0, 650_000_000));
model.addEvent("retry", { attempt: 1, reason: "rate limited" }, at(1, 10));
model.setStatus({ code: SpanStatusCode.ERROR, message: "upstream reset" });
model.end(at(2, 999_999_999));

const moderation = tracer.startSpan(
  "moderation",
  { kind: SpanKind.INTERNAL, startTime: at(0, 150_000_000) },
  inRoot,
);
moderation.setAttribute("moderation.flagged", false);
moderation.end(at(0, 190_500_000));

const publish = tracer.startSpan(
  "publish chat.done",
  { kind: SpanKind.PRODUCER, startTime: at(3, 0) },
  inRoot,
);
publish.end(at(3, 1_000));
const consume = tracer.startSpan(
  "process chat.done",
  { kind: SpanKind.CONSUMER, startTime: at(3, 5_000_000) },
  trace.setSpan(context.active(), publish),
);
consume.end(at(3, 25_000_000));

// First batch: the children; second batch: the root. Two requests, on one kept-alive
// connection where the agent reuses it, so the server must find where a chunked body ends.
await provider.forceFlush();
root.setStatus({ code: SpanStatusCode.OK });
root.end(at(3, 30_000_000));
await provider.forceFlush();
await provider.shutdown();

process.stdout.write(JSON.stringify(recorded));
