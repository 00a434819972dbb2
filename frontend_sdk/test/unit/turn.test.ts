import Ajv2020 from "ajv/dist/2020";
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { cut } from "../../src/lib/util";
import { Turn } from "../../src/turn";
import type { TurnEvent } from "../../src/types";
import { fakeClock, openai, sse } from "./helpers";

const schema = JSON.parse(readFileSync(`${__dirname}/../../../rumserver/schemas/beacon.v1.json`, "utf8"));
const validateBatch = new Ajv2020({ strict: false, allErrors: true }).compile(schema);

/** A turn and the event it ends with. */
const newTurn = () => {
  const ended: TurnEvent[] = [];
  const turn = new Turn({ traceId: "a".repeat(32), spanId: "b".repeat(16), conversationId: "c", turnIndex: 0 }, "https://api.example.com/chat", "POST", undefined, (e) => ended.push(e));
  turn.headers(200);
  return { turn, event: () => ended[0]! };
};

/** The event as the server would get it: valid against the shared schema. */
const valid = (event: TurnEvent) => {
  const batch = { v: 1, sdk: { name: "llmrum", version: "0.1.0" }, sent_at: Date.now(), session: { id: "s", started_at: Date.now() }, page: { url: "https://x.example/", referrer: "" }, events: [event] };
  expect(validateBatch(batch), JSON.stringify(validateBatch.errors)).toBe(true);
  return event;
};

const anthropic = (name: string, data: unknown) => `event: ${name}\n${sse({ type: name, ...(data as object) }).trimEnd()}\n\n`;
const anthropicStart = () =>
  anthropic("message_start", { message: { id: "msg_1", type: "message", role: "assistant", model: "claude-sonnet-4-5", content: [], usage: { input_tokens: 12, output_tokens: 1 } } }) +
  anthropic("content_block_start", { index: 0, content_block: { type: "text", text: "" } });
const anthropicToken = (text: string) => anthropic("content_block_delta", { index: 0, delta: { type: "text_delta", text } });

describe("output tokens", () => {
  it("a stopped Anthropic stream counts the tokens that arrived, not message_start's placeholder", () => {
    const { turn, event } = newTurn();
    turn.chunk(anthropicStart());
    for (const t of ["One", " two", " six", " ten"]) turn.chunk(anthropicToken(t));
    turn.end("stopped");
    expect(valid(event())).toMatchObject({ outcome: "stopped", output_tokens: 4, tokens_estimated: true, model: "claude-sonnet-4-5" });
    // The input count is real and kept; the placeholder output count is not sent as usage.
    expect(event().usage).toEqual({ input_tokens: 12 });
  });

  it("a completed Anthropic stream takes message_delta's count", () => {
    const { turn, event } = newTurn();
    turn.chunk(anthropicStart() + anthropicToken("Hi") + anthropicToken(" there"));
    turn.chunk(anthropic("content_block_stop", { index: 0 }) + anthropic("message_delta", { delta: { stop_reason: "end_turn" }, usage: { output_tokens: 2 } }) + anthropic("message_stop", {}));
    turn.end("completed");
    expect(event()).toMatchObject({ output_tokens: 2, tokens_estimated: false, usage: { input_tokens: 12, output_tokens: 2 } });
  });
});

describe("model", () => {
  it("is null, never empty, when the stream does not name it (Vercel AI SDK UI message stream)", () => {
    const { turn, event } = newTurn();
    for (const part of [{ type: "start" }, { type: "start-step" }, { type: "text-start", id: "0" }, { type: "text-delta", id: "0", delta: "Hi" }, { type: "text-end", id: "0" }, { type: "finish-step" }, { type: "finish", finishReason: "stop" }])
      turn.chunk(sse(part));
    turn.chunk("data: [DONE]\n\n");
    turn.end("completed");
    expect(valid(event())).toMatchObject({ model: null, output_tokens: 1, outcome: "completed" });
  });

  it("an empty model field is no model (Azure OpenAI's first chunk names none)", () => {
    const { turn, event } = newTurn();
    turn.chunk(sse({ id: "", model: "", choices: [], prompt_filter_results: [] }));
    turn.chunk(openai("Hi", { model: "" }));
    turn.end("completed");
    expect(event().model).toBeNull();
  });

  it("reads the model an AI SDK app puts in its message metadata", () => {
    const { turn, event } = newTurn();
    turn.chunk(sse({ type: "start", messageMetadata: { model: "gpt-5-mini" } }) + sse({ type: "text-delta", id: "0", delta: "Hi" }));
    turn.end("completed");
    expect(event().model).toBe("gpt-5-mini");
  });
});

describe("reads parsed in batches", () => {
  it("times each read when it came, whenever it is parsed", () => {
    const clock = fakeClock();
    const { turn, event } = newTurn();
    const t0 = clock.get();
    turn.chunk(openai()); // role only
    for (let i = 0; i < 200; i++) {
      clock.tick(i % 2 ? 10 : 30);
      turn.chunk(new TextEncoder().encode(openai(`t${i} `)));
    }
    clock.tick(5);
    turn.end("completed");
    const e = valid(event());
    expect([e.chunks, e.t_first_token, e.t_last_token, e.t_end]).toEqual([201, t0 + 30, t0 + 4000, t0 + 4005]);
    expect(e.tbt_gaps.slice(0, 4)).toEqual([10, 30, 10, 30]);
    expect(e.tbt_summary).toEqual({ count: 199, p50: 10, p95: 30, max: 30 });
  });

  it("holds a read no longer than a batch: a large one is parsed at once", () => {
    const { turn } = newTurn();
    turn.chunk(openai("small"));
    expect(turn._reads).toHaveLength(2);
    turn.chunk(openai("x".repeat(70_000)));
    expect(turn._reads).toHaveLength(0);
    expect(turn.tokenEvents).toBe(2);
  });
});

describe("strings cut at code points", () => {
  it("never splits a surrogate pair", () => {
    expect(cut("ab", 5)).toBe("ab");
    expect(cut("abc", 2)).toBe("ab");
    expect(cut("a😀", 2)).toBe("a"); // the emoji's high surrogate would be alone
    expect(cut("😀b", 2)).toBe("😀");
    expect(cut("a😀", 3)).toBe("a😀");
  });

  it("a long error ends on a whole character", () => {
    const { turn, event } = newTurn();
    turn.end("error", "x".repeat(1023) + "😀".repeat(10));
    expect(event().error).toBe("x".repeat(1023));
    expect(encodeURIComponent(event().error!)).toBe("x".repeat(1023)); // throws on a lone surrogate
  });
});
