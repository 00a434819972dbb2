/** Reads LLM streams as they pass by: SSE (OpenAI, Anthropic, Vercel AI SDK v5 UI
 * stream), the Vercel AI SDK data stream (`0:"text"` lines) and NDJSON. It only
 * looks: the bytes themselves go to the page untouched. */

export interface Parsed {
  /** Visible answer text in this event ("" or absent: not a token). */
  content?: string | undefined;
  model?: string | undefined;
  usage?: Record<string, unknown> | undefined;
}

/** The app's own format: return undefined to fall back to the built-in rules. */
export type ParseChunk = (data: string) => Parsed | undefined | null;

export interface ChunkResult {
  /** SSE `data:` events / stream lines completed by this chunk. */
  events: number;
  /** Of those, events with non-empty content (tokens as the user sees them). */
  tokens: number;
}

type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** Built-in rules: which field of which format carries the answer text. */
export const parseJson = (j: Json): Parsed => {
  const t = j.type;
  const choice = j.choices?.[0];
  let content: string | undefined;
  if (choice) content = str(choice.delta?.content) ?? str(choice.text) ?? str(choice.message?.content); // OpenAI
  else if (t === "content_block_delta") content = j.delta?.type === "text_delta" ? str(j.delta.text) : undefined; // Anthropic
  else if (t === "text-delta" || t === "response.output_text.delta") content = str(j.delta) ?? str(j.textDelta); // Vercel v5, OpenAI Responses
  else content = str(j.message?.content) ?? str(j.response); // Ollama
  const inner = j.message ?? j.response; // Anthropic message_start, OpenAI Responses
  return {
    content,
    model: str(j.model) ?? str(inner?.model),
    usage: j.usage ?? inner?.usage,
  };
};

const parseData = (data: string): Parsed | undefined => {
  if (data[0] !== "{") return undefined; // "[DONE]", keep-alives, plain text
  try {
    return parseJson(JSON.parse(data) as Json);
  } catch {
    return undefined;
  }
};

/** Vercel AI SDK data stream protocol line, `<type>:<json>`. */
const parseVercel = (type: string, json: string): Parsed | undefined => {
  try {
    const v = JSON.parse(json) as unknown;
    if (type === "0") return { content: str(v) };
    if ((type === "e" || type === "d") && v && typeof v === "object") return { usage: (v as Json).usage };
  } catch {
    /* not this protocol */
  }
  return undefined;
};

export class StreamParser {
  _decoder = new TextDecoder();
  _line = "";
  _data: string[] = [];
  _result: ChunkResult = { events: 0, tokens: 0 };
  model: string | undefined;
  usage: Record<string, number> | undefined;
  chars = 0;

  constructor(readonly _hook?: ParseChunk) {}

  /** Feeds one chunk (bytes or text); returns what it completed. */
  push(chunk: Uint8Array | string, end = false): ChunkResult {
    this._result = { events: 0, tokens: 0 };
    const text = this._line + (typeof chunk === "string" ? chunk : this._decoder.decode(chunk, { stream: !end }));
    const lines = text.split("\n");
    this._line = end ? "" : (lines.pop() ?? "");
    for (const raw of lines) this._onLine(raw.endsWith("\r") ? raw.slice(0, -1) : raw);
    if (end) {
      if (this._line) this._onLine(this._line);
      this._dispatch();
    }
    return this._result;
  }

  _onLine(line: string): void {
    if (!line) return this._dispatch(); // blank line ends an SSE event
    if (line.startsWith("data:")) {
      this._data.push(line.slice(line[5] === " " ? 6 : 5));
      return;
    }
    // SSE comments (": keep-alive"), event:, id:, retry: carry no tokens.
    if (/^(:|event:|id:|retry:)/.test(line)) return;
    const m = /^([0-9a-z]):/.exec(line);
    if (m) return this._event(line.slice(2), parseVercel(m[1] as string, line.slice(2)));
    this._event(line, parseData(line)); // NDJSON
  }

  _dispatch(): void {
    if (!this._data.length) return;
    const data = this._data.join("\n");
    this._data = [];
    this._event(data, parseData(data));
  }

  _event(data: string, builtIn: Parsed | undefined): void {
    let p = builtIn;
    if (this._hook) {
      try {
        p = this._hook(data) ?? builtIn;
      } catch {
        /* the app's hook must not break measurement */
      }
    }
    this._result.events++;
    if (!p) return;
    if (p.content) {
      this._result.tokens++;
      this.chars += p.content.length;
    }
    if (p.model) this.model = p.model;
    if (p.usage && typeof p.usage === "object") {
      // The server takes integer counts only; nested details objects are dropped.
      for (const [k, v] of Object.entries(p.usage)) {
        if (Number.isInteger(v) && (v as number) >= 0) (this.usage ??= {})[k] = v as number;
      }
    }
  }
}
