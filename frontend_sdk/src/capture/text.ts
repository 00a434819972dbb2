/** Opt-in chat text (`captureText` and `redact`): each turn's prompt, from the request
 * body, and its streamed answer, each through the app's redact hook. The script-tag
 * build has it in its own file (llmrum.text.min.js, added after llmrum.min.js); the ES
 * module has it built in. */
import { cut } from "../lib/util";
import type { Core } from "../core";
import { str, TEXT_MAX, type Json } from "../stream";

/** The prompt in a request body: the last user message of a chat request (OpenAI,
 * Anthropic, Vercel AI SDK `parts`), a `prompt`, a string `input`; otherwise the body. */
export const promptOf = (body: unknown): string | undefined => {
  if (typeof body !== "string") return undefined;
  let j: Json;
  try {
    j = JSON.parse(body) as Json;
  } catch {
    return body;
  }
  const list = j?.messages ?? j?.input;
  const text = (c: unknown): string | undefined =>
    typeof c === "string" ? c : Array.isArray(c) ? c.map((p: Json) => str(p?.text) ?? "").join("") : undefined;
  if (Array.isArray(list)) {
    const m = list.filter((x: Json) => x?.role === "user").pop() as Json | undefined;
    return m && text(m.content ?? m.parts);
  }
  return str(j?.prompt) ?? str(list) ?? body;
};

export const captureText = (core: Core): void => {
  const { captureText: on, redact } = core.o;
  if (!on || !redact) return;
  // Never throws, and anything but a string (null, undefined, a throw) sends nothing.
  const apply = (text: string, kind: "prompt" | "answer"): string | undefined => {
    try {
      const out = redact(text, kind);
      return typeof out === "string" ? cut(out, TEXT_MAX) : undefined;
    } catch {
      return undefined;
    }
  };
  core._onTurn = (turn, body) => {
    const prompt = promptOf(body);
    turn.parser._text = "";
    turn._more = () => {
      const p = prompt === undefined ? undefined : apply(prompt, "prompt");
      const a = turn.parser._text ? apply(turn.parser._text, "answer") : undefined;
      return { ...(p === undefined ? {} : { prompt_text: p }), ...(a === undefined ? {} : { answer_text: a }) };
    };
  };
};
