import { describe, expect, it, vi } from "vitest";
import { Core } from "../../src/core";
import { instrumentFetch } from "../../src/capture/fetch";
import { parseServerTiming } from "../../src/turn";
import type { TurnEvent, Options } from "../../src/types";
import { controlledBody, fakeClock, openai } from "./helpers";

const API = "https://api.example.com/v1/chat/completions";
const OTHER = "https://llm.thirdparty.example/v1/chat/completions";

let calls: { url: string; headers: Headers }[];
let turns: TurnEvent[];
let core: Core;

/** Installs the SDK's fetch wrapper over a fake network answering with `reply`. */
const setup = (reply: () => Response | Promise<Response>, o: Partial<Options> = {}) => {
  calls = [];
  turns = [];
  window.fetch = vi.fn(async (input: RequestInfo | URL, init?: RequestInit) => {
    const req = new Request(input, init);
    calls.push({ url: req.url, headers: req.headers });
    if (init?.signal?.aborted) throw new DOMException("aborted", "AbortError");
    return reply();
  }) as typeof fetch;
  core = new Core(
    { endpoint: "https://rum.example.com", key: "pk_test", chatUrls: [/\/chat\/completions/], tracePropagationTargets: ["https://api.example.com"], ...o },
    vi.fn() as unknown as typeof fetch,
  );
  vi.spyOn(core, "emit").mockImplementation((e) => void (e.type === "turn" && turns.push(e)));
  instrumentFetch(core);
};

const sseResponse = (body: ReadableStream<Uint8Array> | string, init: ResponseInit = {}) =>
  new Response(body, { status: 200, headers: { "content-type": "text/event-stream", ...init.headers }, ...init });

const fullStream = () => openai() + openai("Hello") + openai(" world") + 'data: {"choices":[],"usage":{"completion_tokens":2}}\n\ndata: [DONE]\n\n';

describe("trace propagation", () => {
  it("adds traceparent and baggage to targets and same-origin requests only", async () => {
    setup(() => new Response("{}"));
    await (await fetch(API, { method: "POST", body: "{}" })).text();
    await fetch("/api/local");
    await (await fetch(OTHER, { method: "POST" })).text();
    await fetch("https://cdn.example.net/x.js");
    const [target, same, other, cdn] = calls;
    expect(target?.headers.get("traceparent")).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
    expect(target?.headers.get("baggage")).toBe(`session.id=${core.session().id}`);
    expect(same?.headers.get("traceparent")).toMatch(/^00-/);
    for (const c of [other, cdn]) {
      expect(c?.headers.get("traceparent")).toBeNull();
      expect(c?.headers.get("baggage")).toBeNull();
    }
    // The third-party chat call is still measured as a turn, just not traced.
    expect(turns.map((t) => t.url)).toEqual([API, OTHER]);
  });

  it("reports exactly the ids it sent, a new trace per turn, and keeps the app's baggage", async () => {
    setup(() => new Response("{}"));
    await (await fetch(API, { method: "POST", headers: { baggage: "tenant=a" } })).text();
    await (await fetch(new Request(API, { method: "POST" }))).text();
    const sent = calls.map((c) => c.headers.get("traceparent")!.split("-"));
    expect(turns.map((t) => [t.trace_id, t.span_id])).toEqual(sent.map((p) => [p[1], p[2]]));
    expect(sent[0]![1]).not.toBe(sent[1]![1]);
    expect(calls[0]?.headers.get("baggage")).toBe(`tenant=a,session.id=${core.session().id}`);
    expect(turns.map((t) => [t.method, t.turn_index, t.conversation_id])).toEqual([["POST", 0, core.session().id], ["POST", 1, core.session().id]]);
  });

  it("sends the not-sampled flag when the session is not sampled", async () => {
    setup(() => new Response("{}"), { sampleRate: 0 });
    await fetch(API, { method: "POST" });
    expect(calls[0]?.headers.get("traceparent")).toMatch(/-00$/);
  });
});

describe("the page's view of the body is unchanged", () => {
  const consumers: Record<string, (r: Response) => Promise<string>> = {
    "getReader()": async (r) => {
      const reader = r.body!.getReader();
      const dec = new TextDecoder();
      let s = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return s;
        s += dec.decode(value, { stream: true });
      }
    },
    "for await (the OpenAI and Anthropic clients)": async (r) => {
      const dec = new TextDecoder();
      let s = "";
      for await (const value of r.body as unknown as AsyncIterable<Uint8Array>) s += dec.decode(value, { stream: true });
      return s;
    },
    "text()": (r) => r.text(),
    "clone()": async (r) => {
      const c = r.clone();
      const [a, b] = await Promise.all([r.text(), c.text()]);
      expect(a).toBe(b);
      return a;
    },
    "pipeThrough(TextDecoderStream)": async (r) => {
      let s = "";
      const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) return s;
        s += value;
      }
    },
  };
  for (const [name, consume] of Object.entries(consumers)) {
    it(`through ${name}`, async () => {
      setup(() => sseResponse(fullStream(), { headers: { "x-app": "1" } }));
      const r = await fetch(API, { method: "POST" });
      expect([r.status, r.headers.get("x-app")]).toEqual([200, "1"]);
      expect(await consume(r)).toBe(fullStream());
      expect(turns).toHaveLength(1);
      expect(turns[0]).toMatchObject({ outcome: "completed", output_tokens: 2, tokens_estimated: false, model: "gpt-4o-mini", status: 200 });
    });
  }

  it("through json()", async () => {
    setup(() => new Response('{"choices":[{"message":{"content":"hi"}}]}'));
    expect(await (await fetch(API)).json()).toEqual({ choices: [{ message: { content: "hi" } }] });
    expect(turns[0]?.t_first_token).not.toBeNull();
  });
});

describe("timing and outcomes", () => {
  it("times first token, gaps and end on the page's reads", async () => {
    const clock = fakeClock();
    const body = controlledBody();
    setup(() => sseResponse(body.stream, { headers: { "server-timing": 'trace;desc="00-abc-def-01", total;dur=12.5' } }));
    const t0 = clock.get();
    const pending = fetch(API, { method: "POST" });
    clock.tick(100);
    const reader = (await pending).body!.getReader();
    const read = async (s: string, after: number) => {
      clock.tick(after);
      body.push(s);
      await reader.read();
    };
    await read(openai(), 50); // role only
    await read(openai("a"), 150);
    await read(openai("b"), 40);
    await read(": ping\n\n", 10);
    await read(openai("c"), 30);
    clock.tick(5);
    body.close();
    await reader.read();
    const t = turns[0]!;
    expect([t.t_send, t.t_headers, t.t_first_token, t.t_last_token, t.t_end]).toEqual([t0, t0 + 100, t0 + 300, t0 + 380, t0 + 385]);
    expect(t.tbt_gaps).toEqual([40, 40]);
    expect(t.tbt_summary).toEqual({ count: 2, p50: 40, p95: 40, max: 40 });
    expect([t.chunks, t.output_tokens, t.tokens_estimated]).toEqual([5, 3, true]);
    expect(t.server_timing).toEqual(parseServerTiming('trace;desc="00-abc-def-01", total;dur=12.5'));
    expect(t.server_timing).toEqual([{ name: "trace", duration: null, description: "00-abc-def-01" }, { name: "total", duration: 12.5, description: "" }]);
  });

  it("ends as stopped when the AbortController aborts mid-stream, and the page sees the AbortError", async () => {
    const body = controlledBody();
    const ac = new AbortController();
    setup(() => sseResponse(body.stream));
    const reader = (await fetch(API, { signal: ac.signal })).body!.getReader();
    body.push(openai("a"));
    await reader.read();
    ac.abort();
    body.error(new DOMException("The user aborted a request.", "AbortError"));
    await expect(reader.read()).rejects.toMatchObject({ name: "AbortError" });
    expect(turns[0]).toMatchObject({ outcome: "stopped", output_tokens: 1 });
  });

  it("ends as stopped when the page leaves its for-await loop, and cancels the body", async () => {
    const body = controlledBody();
    setup(() => sseResponse(body.stream));
    const r = await fetch(API);
    body.push(openai("a"));
    for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) if (chunk) break;
    expect(turns[0]).toMatchObject({ outcome: "stopped", chunks: 1, output_tokens: 1 });
    await expect(body.stream.getReader().closed).resolves.toBeUndefined(); // cancelled: closed and unlocked
  });

  it("ends as stopped when the page cancels its reader", async () => {
    const body = controlledBody();
    setup(() => sseResponse(body.stream));
    const reader = (await fetch(API)).body!.getReader();
    await reader.cancel();
    expect(turns[0]?.outcome).toBe("stopped");
  });

  it("is an error on an HTTP error, and names a likely CORS failure on a traced request", async () => {
    setup(() => new Response("nope", { status: 503 }));
    expect((await fetch(API)).status).toBe(503);
    expect(turns[0]).toMatchObject({ outcome: "error", error: "HTTP 503", status: 503 });

    setup(() => Promise.reject(new TypeError("Failed to fetch")));
    await expect(fetch(API)).rejects.toThrow("Failed to fetch");
    await expect(fetch(OTHER)).rejects.toThrow("Failed to fetch");
    expect(turns.map((t) => t.error)).toEqual([
      "likely CORS preflight refused the trace headers: TypeError: Failed to fetch",
      "TypeError: Failed to fetch",
    ]);
  });

  it("abandons a turn still streaming when the page hides, and ignores later chunks", async () => {
    const body = controlledBody();
    setup(() => sseResponse(body.stream));
    const reader = (await fetch(API)).body!.getReader();
    body.push(openai("a"));
    await reader.read();
    for (const t of [...core.active]) t.end("abandoned");
    body.push(openai("b"));
    await reader.read();
    expect(turns).toHaveLength(1);
    expect(turns[0]).toMatchObject({ outcome: "abandoned", output_tokens: 1 });
  });

  it("links a regenerate to the turn it replaces and marks an edit as intent correction", async () => {
    setup(() => new Response("{}"));
    const chat = async () => (await fetch(API)).text();
    await chat();
    core.next.regenerateOf = turns[0]!.span_id;
    await chat();
    core.next.intentCorrection = true;
    await chat();
    expect(turns.map((t) => [t.regenerate_of, t.intent_correction])).toEqual([[null, false], [turns[0]!.span_id, false], [null, true]]);
  });
});

describe("a client that cancels the body once the stream said it was over", () => {
  // The OpenAI client breaks off at [DONE] and cancels the body before its end is read.
  const ends: Record<string, string> = {
    "[DONE]": "data: [DONE]\n\n",
    "Anthropic message_stop": 'event: message_stop\ndata: {"type":"message_stop"}\n\n',
    "Vercel AI SDK finish": 'data: {"type":"finish","finishReason":"stop"}\n\n',
  };
  for (const [name, end] of Object.entries(ends)) {
    it(`completed after ${name}, stopped before it`, async () => {
      for (const said of [true, false]) {
        const body = controlledBody();
        setup(() => sseResponse(body.stream));
        const r = await fetch(API);
        body.push(openai("a") + (said ? end : ""));
        for await (const chunk of r.body as unknown as AsyncIterable<Uint8Array>) if (chunk) break;
        expect(turns[0]?.outcome).toBe(said ? "completed" : "stopped");
      }
    });
  }
});
