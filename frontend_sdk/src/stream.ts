/** Reads LLM streams as they pass by: SSE (OpenAI, Anthropic, Vercel AI SDK v5 UI
 * stream), the Vercel AI SDK data stream (`0:"text"` lines) and NDJSON. It only
 * looks: the bytes themselves go to the page untouched. */

export interface Parsed {
  /** Visible answer text in this event ("" or absent: not a token). */
  content?: string | undefined;
  model?: string | undefined;
  usage?: Record<string, unknown> | undefined;
  /** The stream's own end marker (Anthropic message_stop, Vercel finish...). */
  end?: boolean | undefined;
}

/** The app's own format: return undefined to fall back to the built-in rules. */
export type ParseChunk = (data: string) => Parsed | undefined | null;

/** The most prompt or answer text a turn sends (the server's limit). */
export const TEXT_MAX = 8192;

export type Json = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

export const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);

/** Built-in rules: which field of which format carries the answer text. */
const parseJson = (j: Json): Parsed => {
  const t = j.type;
  const choice = j.choices?.[0];
  let content: string | undefined;
  if (choice) content = str(choice.delta?.content) ?? str(choice.text) ?? str(choice.message?.content); // OpenAI
  else if (t === "content_block_delta") content = j.delta?.type === "text_delta" ? str(j.delta.text) : undefined; // Anthropic
  else if (t === "text-delta" || t === "response.output_text.delta") content = str(j.delta) ?? str(j.textDelta); // Vercel v5, OpenAI Responses
  else content = str(j.message?.content) ?? str(j.response); // Ollama
  // Anthropic message_start, OpenAI Responses, Vercel message metadata ({model} by the AI SDK's docs)
  const inner = j.message ?? j.response ?? j.messageMetadata;
  return {
    content,
    model: str(j.model) ?? str(inner?.model),
    // Anthropic's message_start carries output_tokens 1, a placeholder: the count comes
    // with message_delta, and a stream stopped before it has only what arrived.
    usage: t === "message_start" ? { ...inner?.usage, output_tokens: undefined } : (j.usage ?? inner?.usage),
    end: /^(message_stop|finish|response\.completed)$/.test(t),
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
    if ((type === "e" || type === "d") && v && typeof v === "object") return { usage: (v as Json).usage, end: type === "d" };
  } catch {
    /* not this protocol */
  }
  return undefined;
};

export class StreamParser {
  _decoder: TextDecoder | undefined; // made at the first bytes, not when the turn starts
  _line = "";
  /** The `data:` lines of the SSE event being read; undefined between events. */
  _data: string | undefined;
  /** Tokens completed by the current push. */
  _tokens = 0;
  model: string | undefined;
  usage: Record<string, number> | undefined;
  chars = 0;
  /** The stream said it was over ([DONE], or an end event): a client that cancels the
   * body after that (the OpenAI client does, at [DONE]) stopped nothing. */
  _done = false;
  /** The answer so far, kept only when the app captures text (captureText). */
  _text: string | undefined;

  constructor(readonly _hook?: ParseChunk) {}

  /** Feeds one chunk (bytes or text); returns how many events with content (tokens as
   * the user sees them) it completed. */
  push(chunk: Uint8Array | string, end = false): number {
    this._tokens = 0;
    const text = this._line + (typeof chunk === "string" ? chunk : (this._decoder ??= new TextDecoder()).decode(chunk, { stream: !end }));
    // Line by line without split(): this runs on every chunk of every answer.
    let from = 0;
    for (let nl = text.indexOf("\n"); nl >= 0; nl = text.indexOf("\n", from)) {
      this._onLine(text.slice(from, text[nl - 1] === "\r" ? nl - 1 : nl));
      from = nl + 1;
    }
    this._line = text.slice(from);
    if (end) {
      if (this._line) this._onLine(this._line);
      this._line = "";
      this._onLine("");
    }
    return this._tokens;
  }

  _onLine(line: string): void {
    if (!line) {
      // A blank line ends an SSE event.
      const data = this._data;
      this._data = undefined;
      if (data !== undefined) this._event(data, parseData(data));
    } else if (line.startsWith("data:")) {
      const d = line.slice(line[5] === " " ? 6 : 5);
      this._data = this._data === undefined ? d : this._data + "\n" + d;
    } else if (!/^(:|event:|id:|retry:)/.test(line)) {
      // SSE comments (": keep-alive"), event:, id:, retry: carry no tokens; a Vercel
      // data stream line is `<type>:<json>`; anything else is NDJSON.
      const m = /^([0-9a-z]):/.exec(line);
      if (m) this._event(line.slice(2), parseVercel(m[1] as string, line.slice(2)));
      else this._event(line, parseData(line));
    }
  }

  _event(data: string, builtIn: Parsed | undefined): void {
    if (data === "[DONE]") this._done = true;
    let p = builtIn;
    if (this._hook) {
      try {
        p = this._hook(data) ?? builtIn;
      } catch {
        /* the app's hook must not break measurement */
      }
    }
    if (!p) return;
    const c = p.content;
    if (c) {
      this._tokens++;
      this.chars += c.length;
      if (this._text !== undefined && this._text.length < TEXT_MAX) this._text += c;
    }
    if (p.model) this.model = p.model;
    if (p.end) this._done = true;
    if (p.usage && typeof p.usage === "object") {
      // The server takes integer counts only; nested details objects are dropped.
      for (const [k, v] of Object.entries(p.usage)) {
        if (Number.isInteger(v) && (v as number) >= 0) (this.usage ??= {})[k] = v as number;
      }
    }
  }
}
