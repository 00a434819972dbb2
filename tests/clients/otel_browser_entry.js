// A web page's tracing as OpenTelemetry JS users set it up: WebTracerProvider, a
// BatchSpanProcessor and the browser build of the OTLP/HTTP (JSON) exporter. Bundled
// by esbuild at test set-up; the test calls window.otelExport(options) and gets back
// what the SDK recorded and whether the export succeeded.
import { SpanKind, SpanStatusCode, context, trace } from "@opentelemetry/api";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor, WebTracerProvider } from "@opentelemetry/sdk-trace-web";
import { recorder } from "./otel_record.mjs";

// options: url, headers (optional), timeoutMillis, padding (characters of filler on
// each extra span: makes the request larger than fetch's 64 KiB keepalive budget).
window.otelExport = async function otelExport(options) {
  const recorded = [];
  const exporter = new OTLPTraceExporter({
    url: options.url,
    headers: options.headers,
    timeoutMillis: options.timeoutMillis ?? 10_000,
  });
  const provider = new WebTracerProvider({
    resource: resourceFromAttributes({ "service.name": "chat-web", "deployment.environment": "test" }),
    spanProcessors: [
      recorder(recorded),
      new BatchSpanProcessor(exporter, { scheduledDelayMillis: 60_000, maxExportBatchSize: 512 }),
    ],
  });
  const tracer = provider.getTracer("tests.clients.browser", "0.0.2");
  const base = Math.floor(Date.now() / 1000) - 20;

  const turn = tracer.startSpan("chat turn", {
    kind: SpanKind.CLIENT,
    startTime: [base, 1_000_001],
    attributes: {
      "http.request.method": "POST",
      "url.full": "https://api.example.com/v1/chat/completions",
      "gen_ai.operation.name": "chat",
      "gen_ai.request.model": "gpt-4o-mini",
      "gen_ai.usage.output_tokens": 31,
      "llmrum.role": "gateway", // a page's claim that must decide nothing
      stopped: false,
      gaps: [55.5, 61, 70.25],
    },
  });
  turn.addEvent("first_token", { chunk: 1 }, [base, 421_000_000]);
  const inTurn = trace.setSpan(context.active(), turn);
  const render = tracer.startSpan(
    "render answer",
    { kind: SpanKind.INTERNAL, startTime: [base, 425_500_000], attributes: { "ui.tokens": 31 } },
    inTurn,
  );
  render.end([base + 1, 900_000_000]);
  for (let i = 0; i < (options.padding ? 10 : 0); i++) {
    const filler = tracer.startSpan(
      `chunk ${i}`,
      { startTime: [base, 500_000_000 + i], attributes: { filler: "x".repeat(options.padding) } },
      inTurn,
    );
    filler.end([base, 600_000_000 + i]);
  }
  turn.setStatus({ code: SpanStatusCode.OK });
  turn.end([base + 1, 950_000_000]);

  let error = null;
  try {
    await provider.forceFlush();
  } catch (e) {
    error = String(e);
  }
  await provider.shutdown().catch(() => {});
  return { spans: recorded, error };
};
