/** One chat request as the browser saw it (DESIGN §4 `turn`): timings, gaps
 * between tokens, and how it ended. Transports (fetch, XHR, EventSource, custom)
 * feed it; it knows nothing about them. */
import { cut, now, uuid } from "./lib/util";
import { StreamParser, type ParseChunk } from "./stream";
import type { TurnEvent, Outcome, ServerTimingEntry } from "./types";

const MAX_GAPS = 512; // what the server keeps
const MAX_KEPT = 100_000; // bound memory for the summary on endless streams
// Reads are parsed in batches: on the answer's path a read is only kept with its time
// (the page's own chunk, no copy), and a batch costs the main thread less than its reads
// one at a time would. Bounded, so a long or fast answer is never held for long.
const BATCH_READS = 64;
const BATCH_BYTES = 65_536;

export const parseServerTiming = (header: string | null | undefined): ServerTimingEntry[] =>
  (header ?? "")
    .split(",")
    .filter((part) => part.trim())
    .map((part) => {
      const [name = "", ...params] = part.split(";").map((s) => s.trim());
      const entry: ServerTimingEntry = { name, duration: null, description: "" };
      for (const p of params) {
        const [k, v = ""] = p.split(/=(.*)/s).map((s) => s.trim().replace(/^"|"$/g, ""));
        if (k === "dur" && Number(v) >= 0) entry.duration = Number(v);
        if (k === "desc") entry.description = v;
      }
      return entry;
    });

const percentile = (sorted: ArrayLike<number>, q: number): number =>
  sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? 0;

export interface TurnContext {
  traceId: string;
  spanId: string;
  conversationId: string;
  turnIndex: number;
  regenerateOf?: string | undefined;
  intentCorrection?: boolean | undefined;
}

export class Turn {
  tSend = now();
  tHeaders: number | undefined;
  tFirst: number | undefined;
  tLast: number | undefined;
  status: number | undefined;
  chunks = 0;
  tokenEvents = 0;
  gaps: number[] = [];
  /** Set by a stop click or an abort signal; decides the outcome when it ends. */
  stopRequested = false;
  /** The Resource Timing entry's serverTiming, when the page may see it; otherwise the
   * response's Server-Timing header, read when the turn ends (off the first chunk's path). */
  serverTiming: ServerTimingEntry[] | undefined;
  _timing: string | null | undefined;
  ended = false;
  parser: StreamParser;
  /** Reads not parsed yet, each followed by its time. */
  _reads: (Uint8Array | string | number)[] = [];
  _readBytes = 0;
  /** More fields for the turn's event when it ends (the text add-on's). */
  _more: (() => object) | undefined;

  constructor(
    readonly ctx: TurnContext,
    readonly url: string,
    readonly method: string,
    hook: ParseChunk | undefined,
    readonly _onEnd: (event: TurnEvent) => void,
  ) {
    this.parser = new StreamParser(hook);
  }

  headers(status: number, serverTiming?: string | null): void {
    this.tHeaders = now();
    this.status = status;
    this._timing = serverTiming;
  }

  /** One network read (or one whole SSE message for EventSource). */
  chunk(value: Uint8Array | string): void {
    if (this.ended) return;
    this.chunks++;
    this._reads.push(value, now());
    if ((this._readBytes += value.length) > BATCH_BYTES || this._reads.length >= 2 * BATCH_READS) this._parse();
  }

  _parse(): void {
    const reads = this._reads;
    for (let i = 0; i < reads.length; i += 2) this._tokens(this.parser.push(reads[i] as Uint8Array | string), reads[i + 1] as number);
    reads.length = this._readBytes = 0;
  }

  _tokens(tokens: number, t: number): void {
    if (!tokens) return;
    this.tokenEvents += tokens;
    // A gap is the time between two reads that carried tokens: several tokens in one
    // read arrive together and the user sees them at once.
    if (this.tLast === undefined) this.tFirst = t;
    else if (this.gaps.length < MAX_KEPT) this.gaps.push(t - this.tLast);
    this.tLast = t;
  }

  end(outcome: Outcome, error?: string): void {
    if (this.ended) return;
    const t = now();
    this._parse();
    this._tokens(this.parser.push("", true), t);
    this.ended = true;
    const p = this.parser;
    const sorted = new Float64Array(this.gaps).sort(); // numeric, and faster than an array's
    const fromUsage = p.usage?.completion_tokens ?? p.usage?.output_tokens ?? p.usage?.completionTokens;
    this._onEnd({
      type: "turn",
      id: uuid(),
      ts: this.tSend,
      trace_id: this.ctx.traceId,
      span_id: this.ctx.spanId,
      conversation_id: this.ctx.conversationId,
      turn_index: this.ctx.turnIndex,
      url: this.url,
      method: this.method,
      status: this.status ?? null,
      t_send: this.tSend,
      t_headers: this.tHeaders ?? null,
      t_first_token: this.tFirst ?? null,
      t_last_token: this.tLast ?? null,
      t_end: t,
      chunks: this.chunks,
      tbt_gaps: this.gaps.slice(0, MAX_GAPS).map((g) => Math.round(g * 100) / 100),
      tbt_summary: sorted.length
        ? { count: sorted.length, p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95), max: percentile(sorted, 1) }
        : { count: 0 },
      // Without usage in the stream: about 4 characters a token, and at least one per event.
      output_tokens: fromUsage ?? Math.max(Math.ceil(p.chars / 4), this.tokenEvents),
      tokens_estimated: fromUsage === undefined,
      model: p.model ?? null,
      usage: p.usage ?? null,
      server_timing: this.serverTiming ?? parseServerTiming(this._timing),
      outcome: this.stopRequested && outcome !== "abandoned" ? "stopped" : outcome === "stopped" && p._done ? "completed" : outcome,
      regenerate_of: this.ctx.regenerateOf ?? null,
      intent_correction: !!this.ctx.intentCorrection,
      error: error ? cut(error, 1024) : null,
      ...this._more?.(),
    });
  }
}
