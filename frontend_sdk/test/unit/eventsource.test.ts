import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Core } from "../../src/core";
import { instrumentEventSource } from "../../src/capture/eventsource";
import type { TurnEvent } from "../../src/types";
import { fakeClock } from "./helpers";

const API = "https://api.example.com/v1/chat/completions?q=secret";

/** A stand-in for the browser's EventSource (happy-dom has none): the test fires its events by hand. */
class FakeEventSource extends EventTarget {
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;
  static last: FakeEventSource;
  readyState = 0;
  onmessage: ((e: MessageEvent) => void) | null = null;
  onopen: ((e: Event) => void) | null = null;
  onerror: ((e: Event) => void) | null = null;
  constructor(
    readonly url: string,
    readonly init?: EventSourceInit,
  ) {
    super();
    FakeEventSource.last = this;
  }
  close(): void {
    this.readyState = 2;
  }
  fire(e: Event): Event {
    this.dispatchEvent(e); // happy-dom's EventTarget also calls the on<type> handler
    return e;
  }
  open(): Event {
    this.readyState = 1;
    return this.fire(new Event("open"));
  }
  message(data: unknown, type = "message"): MessageEvent {
    return this.fire(new MessageEvent(type, { data: typeof data === "string" ? data : JSON.stringify(data) })) as MessageEvent;
  }
  error(closed = false): Event {
    this.readyState = closed ? 2 : 0;
    return this.fire(new Event("error"));
  }
}

const token = (content?: string) => ({ model: "gpt-4o-mini", choices: [{ delta: content === undefined ? { role: "assistant" } : { content } }] });

let turns: TurnEvent[];
let core: Core;
let clock: ReturnType<typeof fakeClock>;
const original = window.EventSource;

beforeEach(() => {
  turns = [];
  clock = fakeClock();
  window.EventSource = FakeEventSource as unknown as typeof EventSource;
  core = new Core({ endpoint: "https://rum.example.com", key: "pk_test", chatUrls: [/\/chat\/completions/] }, vi.fn() as unknown as typeof fetch);
  vi.spyOn(core, "emit").mockImplementation((e) => void (e.type === "turn" && turns.push(e)));
  instrumentEventSource(core);
});
afterEach(() => {
  window.EventSource = original;
});

const open = (url = API, init?: EventSourceInit) => {
  const es = new EventSource(url, init);
  return { es, fake: FakeEventSource.last };
};

describe("EventSource: the page's view is unchanged", () => {
  it("passes every event, with the same data, to every kind of listener", () => {
    const { es, fake } = open(API, { withCredentials: true });
    expect(es).toBeInstanceOf(FakeEventSource);
    expect(es).toBeInstanceOf(EventSource);
    expect(Object.keys(es).sort()).toEqual(Object.keys(new FakeEventSource("x")).sort());
    expect([fake.url, fake.init]).toEqual([API, { withCredentials: true }]);
    const got: unknown[] = [];
    es.onopen = (e) => got.push(["onopen", e]);
    es.onmessage = (e) => got.push(["onmessage", e.data]);
    es.addEventListener("message", (e) => got.push(["listener", e.data]));
    es.addEventListener("content_block_delta", (e) => got.push(["named", (e as MessageEvent).data]));
    es.onerror = (e) => got.push(["onerror", e]);
    const o = fake.open();
    const data = JSON.stringify(token("Hi"));
    fake.message(data);
    const named = fake.message('{"type":"content_block_delta","delta":{"type":"text_delta","text":"x"}}', "content_block_delta");
    fake.message("[DONE]");
    const err = fake.error();
    const same = (e: unknown) => (e === o || e === err ? "same event" : e);
    expect(got.map((g) => (g as unknown[]).map(same))).toEqual([
      ["onopen", "same event"],
      ["listener", data],
      ["onmessage", data],
      ["named", named.data],
      ["listener", "[DONE]"],
      ["onmessage", "[DONE]"],
      ["onerror", "same event"],
    ]);
    es.close();
    expect(es.readyState).toBe(2);
  });

  it("makes no turn for other URLs", () => {
    const { fake } = open("https://cdn.example.net/events");
    fake.open();
    fake.message(token("x"));
    fake.error(true);
    expect(turns).toEqual([]);
    expect(core.active.size).toBe(0);
  });
});

describe("EventSource turns", () => {
  it("times the first token and the gaps, and completes at [DONE]", () => {
    const t0 = clock.get();
    const { es, fake } = open();
    expect(core.active.size).toBe(1);
    clock.tick(50);
    fake.open();
    clock.tick(250);
    fake.message(token()); // role-only: not a token
    fake.message(": keep-alive");
    clock.tick(20);
    fake.message(token("Hello"));
    for (const w of [" big", " wide", " world"]) {
      clock.tick(40);
      fake.message(token(w));
    }
    clock.tick(5);
    fake.message({ choices: [], usage: { completion_tokens: 4, prompt_tokens: 3 } });
    fake.message("[DONE]");
    es.close(); // the page closes after [DONE]: still completed
    expect(turns).toHaveLength(1);
    const t = turns[0]!;
    expect(t).toMatchObject({
      url: "https://api.example.com/v1/chat/completions",
      method: "GET",
      status: 200,
      t_send: t0,
      t_headers: t0 + 50,
      t_first_token: t0 + 320,
      t_last_token: t0 + 440,
      t_end: t0 + 445,
      tbt_gaps: [40, 40, 40],
      tbt_summary: { count: 3, p50: 40, max: 40 },
      output_tokens: 4,
      tokens_estimated: false,
      model: "gpt-4o-mini",
      outcome: "completed",
      error: null,
    });
    expect(t.trace_id).toMatch(/^[0-9a-f]{32}$/);
    expect(t.span_id).toMatch(/^[0-9a-f]{16}$/);
    expect(core.active.size).toBe(0);
  });

  it("reads named events (Anthropic) the page listens to", () => {
    const { es, fake } = open();
    es.addEventListener("content_block_delta", () => undefined);
    fake.open();
    fake.message({ type: "message_start", message: { model: "claude-x", usage: { input_tokens: 5 } } }, "message_start");
    fake.message({ type: "content_block_delta", delta: { type: "text_delta", text: "Hi" } }, "content_block_delta");
    fake.error();
    expect(turns[0]).toMatchObject({ outcome: "completed", tbt_summary: { count: 0 }, output_tokens: 1 });
    expect(turns[0]!.t_first_token).not.toBeNull();
  });

  it("is stopped when the page closes it before the answer ends", () => {
    const { es, fake } = open();
    fake.open();
    fake.message(token("a"));
    clock.tick(10);
    es.close();
    expect(turns.map((t) => [t.outcome, t.t_end - t.t_send])).toEqual([["stopped", 10]]);
  });

  it("is stopped by a stop click, then close()", () => {
    const { es, fake } = open();
    fake.open();
    fake.message(token("a"));
    for (const t of core.active) t.stopRequested = true;
    es.close();
    expect(turns[0]?.outcome).toBe("stopped");
  });

  it("is an error when it fails before any data", () => {
    const { fake } = open();
    fake.error(true);
    expect(turns[0]).toMatchObject({ outcome: "error", error: "EventSource error", t_first_token: null, t_headers: null });
  });

  it("completes when the server ends the stream after data, and ignores the reconnection", () => {
    const { fake } = open();
    fake.open();
    fake.message(token("a"));
    fake.error(); // the server closed the connection; the browser will reconnect
    fake.open();
    fake.message(token("b"));
    expect(turns.map((t) => [t.outcome, t.output_tokens])).toEqual([["completed", 1]]);
  });

  it("is abandoned when the page hides mid-stream", () => {
    const { fake } = open();
    fake.open();
    fake.message(token("a"));
    for (const t of [...core.active]) t.end("abandoned"); // what init's pagehide handler does
    fake.message(token("b"));
    expect(turns.map((t) => [t.outcome, t.output_tokens])).toEqual([["abandoned", 1]]);
  });
});
