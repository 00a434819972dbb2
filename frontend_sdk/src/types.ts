/** The beacon payload v1 (rumserver/schemas/beacon.v1.json) and the SDK options. */
import type { ParseChunk } from "./stream";
import type { UrlPattern } from "./lib/util";

export type Outcome = "completed" | "stopped" | "abandoned" | "error";

export interface ServerTimingEntry {
  name: string;
  duration: number | null;
  description: string;
}

export interface TurnEvent {
  type: "turn";
  id: string;
  ts: number;
  trace_id: string;
  span_id: string;
  conversation_id: string;
  turn_index: number;
  url: string;
  method: string;
  status: number | null;
  t_send: number;
  t_headers: number | null;
  t_first_token: number | null;
  t_last_token: number | null;
  t_end: number;
  chunks: number;
  tbt_gaps: number[];
  tbt_summary: { count: number; p50?: number; p95?: number; max?: number };
  output_tokens: number;
  tokens_estimated: boolean;
  model: string | null;
  usage: Record<string, number> | null;
  server_timing: ServerTimingEntry[];
  outcome: Outcome;
  regenerate_of: string | null;
  intent_correction: boolean;
  error: string | null;
  /** Only with captureText, and then only what the app's redact hook returned. */
  prompt_text?: string;
  answer_text?: string;
}

type Attr = string | number | boolean | null;

export type RumEvent =
  | TurnEvent
  | { type: "action"; id: string; ts: number; name: string; attrs: Record<string, Attr>; turn_span_id: string | null; trace_id: string | null }
  | { type: "feedback"; id: string; ts: number; value: "up" | "down" | number; comment: string | null; turn_span_id: string | null; trace_id: string | null }
  | { type: "vital"; id: string; ts: number; name: string; value: number; delta: number; rating: string; navigation_type: string }
  | { type: "error"; id: string; ts: number; message: string; source: string | null; lineno: number | null; colno: number | null; stack: string | null }
  | { type: "page_view"; id: string; ts: number; url: string; referrer: string | null; route_change: boolean };

export interface Options {
  /** Base URL of the llmrum server, e.g. "https://rum.example.com". */
  endpoint: string;
  /** The application's public key (pk_…). */
  key: string;
  /** Requests that get traceparent + baggage. Default: same origin only. */
  tracePropagationTargets?: UrlPattern[];
  /** Requests that are chat turns (timed to the token). */
  chatUrls?: UrlPattern[];
  /** Share of sessions recorded, 0..1 (default 1); also the traceparent sampled flag. */
  sampleRate?: number;
  /** WebSocket chat turns: sockets whose URL `match` accepts; a turn starts when the page
   * sends and ends at the message for which `isEnd(data)` is true. */
  webSocketTurns?: {
    match: (url: string) => boolean;
    isEnd: (data: any) => boolean; // eslint-disable-line @typescript-eslint/no-explicit-any
  };
  /** Reads a stream format the SDK does not know. */
  parseChunk?: ParseChunk;
  /** Conversation id; default: the session id. */
  conversationId?: string;
  /** Opaque or hashed user id. */
  user?: string;
  /** Idle time after which a new session starts (ms, default 30 min). */
  sessionTimeout?: number;
  /** Batch delay in ms (default 5000); a finished turn is sent sooner. */
  flushInterval?: number;
  /** Web Vitals (default true), uncaught errors (true), page views (true). */
  vitals?: boolean;
  errors?: boolean;
  pageViews?: boolean;
  /** Most events held while the server is unreachable; the oldest go first (default 1000). */
  maxQueue?: number;
  /** Prompt and answer text leave the page only when this is true, and then only what
   * `redact` returns for each (default false: no text at all). */
  captureText?: boolean;
  /** Called once per turn and kind with the prompt (the last user message of the request
   * body) and the answer (the streamed content); return the text to send, or null to send
   * none. A hook that throws sends nothing. */
  redact?: (text: string, kind: "prompt" | "answer") => string | null | undefined;
}
