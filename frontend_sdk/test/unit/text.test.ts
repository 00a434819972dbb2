import { describe, expect, it, vi } from "vitest";
import { Core } from "../../src/core";
import { instrumentFetch } from "../../src/capture/fetch";
import { captureText, promptOf } from "../../src/capture/text";
import type { Options, TurnEvent } from "../../src/types";
import { openai, validateBeacon as validate } from "./helpers";

const API = "https://api.example.com/v1/chat/completions";
const PROMPT = JSON.stringify({
  model: "m",
  messages: [
    { role: "system", content: "You are secret-system" },
    { role: "user", content: "first question" },
    { role: "assistant", content: "first answer" },
    { role: "user", content: "my card is 4111 1111 1111 1111" },
  ],
});
const STREAM = openai() + openai("Your card ") + openai("4111 1111 1111 1111 is noted") + "data: [DONE]\n\n";

let sent: string[];
let turns: TurnEvent[];

/** The SDK's fetch wrapper and the text add-on over a fake network, with the real
 * transport whose beacon bodies (what would leave the page) are recorded. */
const setup = (o: Partial<Options> = {}) => {
  sent = [];
  turns = [];
  window.fetch = vi.fn(async () => new Response(STREAM, { headers: { "content-type": "text/event-stream" } })) as typeof fetch;
  const beacon = vi.fn(async (_u: RequestInfo | URL, init?: RequestInit) => {
    sent.push(String(init?.body));
    return new Response("{}", { status: 202 });
  }) as unknown as typeof fetch;
  const core = new Core({ endpoint: "https://rum.example.com", key: "pk", chatUrls: [/chat\/completions/], ...o }, beacon);
  const emit = core.emit.bind(core);
  vi.spyOn(core, "emit").mockImplementation((e) => {
    if (e.type === "turn") turns.push(e);
    emit(e);
  });
  instrumentFetch(core);
  captureText(core);
  return core;
};

const chat = async (core: Core, body: BodyInit = PROMPT) => {
  const r = await fetch(API, { method: "POST", body });
  const text = await r.text();
  await core.transport.flush();
  return text;
};

describe("prompt and answer text", () => {
  it("never leaves the page by default, redact hook or not", async () => {
    for (const o of [{}, { redact: (t: string) => t }, { captureText: false, redact: (t: string) => t }, { captureText: true }]) {
      const core = setup(o);
      expect(await chat(core)).toBe(STREAM);
      expect(turns).toHaveLength(1);
      expect(turns[0]).not.toHaveProperty("prompt_text");
      expect(turns[0]).not.toHaveProperty("answer_text");
      expect(sent).toHaveLength(1);
      for (const word of ["4111", "first question", "secret-system", "noted"]) expect(sent[0]).not.toContain(word);
    }
  });

  it("with captureText sends what the redact hook returns, and only that", async () => {
    const seen: [string, string][] = [];
    const core = setup({
      captureText: true,
      redact: (text, kind) => {
        seen.push([kind, text]);
        return text.replace(/\d{4}( \d{4}){3}/g, "[card]");
      },
    });
    expect(await chat(core)).toBe(STREAM); // the page's bytes are untouched
    // The hook saw the last user message and the streamed answer, once each.
    expect(seen).toEqual([
      ["prompt", "my card is 4111 1111 1111 1111"],
      ["answer", "Your card 4111 1111 1111 1111 is noted"],
    ]);
    expect(turns[0]).toMatchObject({ prompt_text: "my card is [card]", answer_text: "Your card [card] is noted" });
    const body = JSON.parse(sent[0]!);
    expect(validate(body), JSON.stringify(validate.errors)).toBe(true);
    expect(body.events[0]).toMatchObject({ prompt_text: "my card is [card]", answer_text: "Your card [card] is noted" });
    // The card number as typed (a timestamp's digits may hold "4111" by chance).
    for (const word of ["4111 1111", "first question", "secret-system"]) expect(sent[0]).not.toContain(word);
  });

  it("sends nothing for a kind the hook declines (null), and cuts long output to 8192", async () => {
    const core = setup({ captureText: true, redact: (text, kind) => (kind === "prompt" ? null : text.repeat(1000)) });
    await chat(core);
    expect(turns[0]).not.toHaveProperty("prompt_text");
    expect(turns[0]?.answer_text).toHaveLength(8192);
  });

  it("cuts at a whole character: the 8192nd unit is half an emoji", async () => {
    const core = setup({ captureText: true, redact: (text, kind) => (kind === "prompt" ? "p".repeat(8191) + "😀" : text) });
    await chat(core);
    expect(turns[0]?.prompt_text).toBe("p".repeat(8191));
    expect(validate(JSON.parse(sent[0]!))).toBe(true);
  });

  it("a hook that throws sends no text and never breaks the page or the turn", async () => {
    const core = setup({
      captureText: true,
      redact: () => {
        throw new Error("redactor down");
      },
    });
    const errors: unknown[] = [];
    const onError = (e: ErrorEvent) => errors.push(e.error);
    window.addEventListener("error", onError);
    expect(await chat(core)).toBe(STREAM);
    window.removeEventListener("error", onError);
    expect(errors).toEqual([]);
    expect(turns[0]).toMatchObject({ outcome: "completed", output_tokens: expect.any(Number) });
    expect(turns[0]).not.toHaveProperty("prompt_text");
    expect(turns[0]).not.toHaveProperty("answer_text");
    expect(sent[0]).not.toContain("4111");
  });
});

describe("promptOf", () => {
  it("finds the user's text in the common request formats", () => {
    expect(promptOf(PROMPT)).toBe("my card is 4111 1111 1111 1111");
    // Anthropic content blocks; Vercel AI SDK v5 UI messages (parts).
    expect(promptOf(JSON.stringify({ messages: [{ role: "user", content: [{ type: "text", text: "a" }, { type: "image" }, { type: "text", text: "b" }] }] }))).toBe("ab");
    expect(promptOf(JSON.stringify({ messages: [{ role: "user", parts: [{ type: "text", text: "v5" }] }] }))).toBe("v5");
    expect(promptOf(JSON.stringify({ model: "m", input: "responses api" }))).toBe("responses api");
    expect(promptOf(JSON.stringify({ prompt: "completion" }))).toBe("completion");
    expect(promptOf("plain text body")).toBe("plain text body");
    expect(promptOf(new Blob(["x"]))).toBeUndefined(); // not read: no copy of binary bodies
  });
});
