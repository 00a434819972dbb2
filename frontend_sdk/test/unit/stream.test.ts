import { describe, expect, it } from "vitest";
import { StreamParser } from "../../src/stream";
import { openai, sse } from "./helpers";

const feed = (p: StreamParser, ...parts: string[]) => parts.map((s) => p.push(s));

describe("OpenAI SSE", () => {
  it("does not count the role-only delta, keep-alives or [DONE] as tokens", () => {
    const p = new StreamParser();
    expect(feed(p, openai(), ": keep-alive\n\n", openai(""), openai("Hel"), "data: [DONE]\n\n")).toEqual([0, 0, 0, 1, 0]);
    expect(p.model).toBe("gpt-4o-mini");
  });

  it("joins events split across reads and counts several events in one read", () => {
    const p = new StreamParser();
    const a = openai("a");
    const two = a + openai("b") + openai("c");
    expect(feed(p, two.slice(0, 17), two.slice(17, a.length), two.slice(a.length))).toEqual([0, 1, 2]);
  });

  it("decodes multi-byte characters split across chunks", () => {
    const p = new StreamParser();
    const bytes = new TextEncoder().encode(openai("héllo"));
    const cut = bytes.indexOf(0xc3) + 1;
    expect(p.push(bytes.slice(0, cut)) + p.push(bytes.slice(cut))).toBe(1);
    expect(p.chars).toBe(5);
  });

  it("handles CRLF and dispatches a last event without a blank line at the end", () => {
    const p = new StreamParser();
    expect(p.push('data: {"choices":[{"delta":{"content":"x"}}]}\r\n')).toBe(0);
    expect(p.push("", true)).toBe(1);
  });

  it("keeps integer usage counts only", () => {
    const p = new StreamParser();
    p.push(sse({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 31, prompt_tokens_details: { cached_tokens: 0 } } }));
    expect(p.usage).toEqual({ prompt_tokens: 9, completion_tokens: 31 });
  });
});

describe("Anthropic SSE", () => {
  it("takes text deltas, model and usage from the message events", () => {
    const p = new StreamParser();
    const ev = (name: string, data: unknown) => `event: ${name}\n${sse(data).trimEnd()}\n\n`;
    const tokens = feed(
      p,
      ev("message_start", { type: "message_start", message: { model: "claude-sonnet-4", usage: { input_tokens: 12, output_tokens: 1 } } }),
      ev("content_block_start", { type: "content_block_start", index: 0, content_block: { type: "text", text: "" } }),
      ev("ping", { type: "ping" }),
      ev("content_block_delta", { type: "content_block_delta", delta: { type: "input_json_delta", partial_json: "{" } }),
      ev("content_block_delta", { type: "content_block_delta", delta: { type: "text_delta", text: "Hi" } }),
      ev("message_delta", { type: "message_delta", usage: { output_tokens: 15 } }),
    );
    expect(tokens).toEqual([0, 0, 0, 0, 1, 0]);
    expect(p.model).toBe("claude-sonnet-4");
    expect(p.usage).toEqual({ input_tokens: 12, output_tokens: 15 });
  });
});

describe("Vercel AI SDK", () => {
  it("reads the data stream protocol's text parts and usage", () => {
    const p = new StreamParser();
    expect(feed(p, 'f:{"messageId":"m1"}\n', '0:""\n', '0:"Hel"\n0:"lo"\n', 'e:{"finishReason":"stop","usage":{"promptTokens":3,"completionTokens":2}}\n')).toEqual([0, 0, 2, 0]);
    expect(p.usage).toEqual({ promptTokens: 3, completionTokens: 2 });
  });

  it("reads the v5 UI message stream (SSE text-delta parts)", () => {
    const p = new StreamParser();
    expect(feed(p, sse({ type: "start" }), sse({ type: "text-start", id: "t" }), sse({ type: "text-delta", id: "t", delta: "Hi" }))).toEqual([0, 0, 1]);
  });
});

describe("parseChunk hook", () => {
  it("reads a format the SDK does not know, and falls back when it returns undefined", () => {
    const p = new StreamParser((data) => (data.startsWith("TOK ") ? { content: data.slice(4), model: "m" } : undefined));
    expect(feed(p, "data: TOK a\n\n", openai("b"), "data: other\n\n")).toEqual([1, 1, 0]);
    expect(p.model).toBe("gpt-4o-mini");
  });

  it("survives a hook that throws", () => {
    const p = new StreamParser(() => {
      throw new Error("app bug");
    });
    expect(p.push(openai("x"))).toBe(1);
  });
});

describe("Anthropic message_start usage", () => {
  it("keeps the input count and drops the placeholder output count", () => {
    const p = new StreamParser();
    p.push(sse({ type: "message_start", message: { model: "claude-haiku-4-5", usage: { input_tokens: 7, cache_read_input_tokens: 0, output_tokens: 1 } } }));
    expect(p.usage).toEqual({ input_tokens: 7, cache_read_input_tokens: 0 });
    p.push(sse({ type: "message_start", message: { model: "claude-haiku-4-5" } }));
    expect(p.usage).toEqual({ input_tokens: 7, cache_read_input_tokens: 0 });
  });
});
