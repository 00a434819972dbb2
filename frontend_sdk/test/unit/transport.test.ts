import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Core } from "../../src/core";
import { Transport, type Envelope } from "../../src/transport";
import { Turn } from "../../src/turn";
import type { RumEvent, TurnEvent } from "../../src/types";
import { openai, validateBeacon as validate } from "./helpers";

const env = (): Envelope => ({ v: 1, sdk: { name: "llmrum", version: "0.1.0" }, session: { id: "s1", started_at: 1.7e12 }, page: { url: "https://chat.example.com/", referrer: "" } });
const action = (i: number, pad = 0): RumEvent => ({ type: "action", id: `e${i}`, ts: 1.7e12 + i, name: "copy".padEnd(4 + pad, "x"), attrs: {}, turn_span_id: null, trace_id: null });

type Reply = number | [number, Record<string, string>] | Error;
let bodies: Record<string, any>[];
const network = (...replies: Reply[]) => {
  bodies = [];
  return vi.fn(async (_url: RequestInfo | URL, init?: RequestInit) => {
    bodies.push(JSON.parse(String(init?.body)));
    const r = replies.length > 1 ? replies.shift()! : replies[0]!;
    if (r instanceof Error) throw r;
    const [status, headers] = typeof r === "number" ? [r, {}] : r;
    return new Response("{}", { status, headers });
  }) as unknown as typeof fetch & ReturnType<typeof vi.fn>;
};
const transport = (f: typeof fetch, maxQueue = 1000) =>
  new Transport({ url: "https://rum.example.com/rum/v1/beacon?key=pk", envelope: env, fetch: f, maxQueue, flushInterval: 5000, backoff: 1000 });

beforeEach(() => {
  vi.useFakeTimers({ now: 1.7e12 });
});
afterEach(() => vi.useRealTimers());

describe("batching", () => {
  it("sends at most 200 events and under 60 kB a request, text/plain with keepalive", async () => {
    const f = network(202);
    const t = transport(f);
    for (let i = 0; i < 450; i++) t.add(action(i));
    await t.flush();
    expect(bodies.map((b) => b.events.length)).toEqual([200, 200, 50]);
    expect(f.mock.calls[0]![1]).toMatchObject({ method: "POST", keepalive: true, headers: { "content-type": "text/plain;charset=UTF-8" } });

    const g = network(202);
    const big = transport(g);
    for (let i = 0; i < 40; i++) big.add(action(i, 5000));
    await big.flush();
    expect(g.mock.calls.every((c) => new TextEncoder().encode(String(c[1]!.body)).length <= 60_000)).toBe(true);
    expect(bodies.reduce((n, b) => n + b.events.length, 0)).toBe(40);
  });

  it("drops the oldest events past the bound and says how many", async () => {
    const t = transport(network(202), 10);
    for (let i = 0; i < 15; i++) t.add(action(i));
    await t.flush();
    expect(bodies[0]!.events.map((e: RumEvent) => e.id)).toEqual(Array.from({ length: 10 }, (_, i) => `e${i + 5}`));
    expect(bodies[0]!.dropped).toBe(5);
  });
});

describe("retry", () => {
  it("honours Retry-After on 429, backs off on 5xx and network errors, re-stamping sent_at", async () => {
    const f = network([429, { "retry-after": "30" }], 503, new TypeError("Failed to fetch"), 202);
    const t = transport(f);
    t.add(action(1));
    await t.flush();
    expect(f).toHaveBeenCalledTimes(1);
    await vi.advanceTimersByTimeAsync(29_000);
    expect(f).toHaveBeenCalledTimes(1); // Retry-After: 30 s
    await vi.advanceTimersByTimeAsync(1_500);
    expect(f).toHaveBeenCalledTimes(2); // 503
    await vi.advanceTimersByTimeAsync(10_000);
    expect(f).toHaveBeenCalledTimes(4); // network error, then accepted
    expect(new Set(bodies.map((b) => b.sent_at)).size).toBe(4);
    expect(new Set(bodies.map((b) => b.events[0].id))).toEqual(new Set(["e1"]));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(f).toHaveBeenCalledTimes(4); // delivered once
  });

  it("gives up on a batch the server refuses for good (4xx)", async () => {
    const f = network(400, 202);
    const t = transport(f);
    t.add(action(1));
    await t.flush();
    t.add(action(2));
    await t.flush();
    expect(bodies.map((b) => b.events[0].id)).toEqual(["e1", "e2"]);
  });
});

describe("page lifecycle and persistence", () => {
  it("uses sendBeacon when the page hides", () => {
    const beacon = vi.fn((_url: string, _body: string) => true);
    Object.defineProperty(navigator, "sendBeacon", { value: beacon, configurable: true });
    const t = transport(network(202));
    t.add(action(1));
    t.hide();
    expect(beacon).toHaveBeenCalledOnce();
    expect(JSON.parse(beacon.mock.calls[0]![1])).toMatchObject({ events: [{ id: "e1" }] });
    expect(Object.keys(localStorage)).toEqual([]);
  });

  it("beacons at once what is reported after the page hid (Web Vitals do), until it shows again", async () => {
    const beacon = vi.fn((_url: string, _body: string) => true);
    Object.defineProperty(navigator, "sendBeacon", { value: beacon, configurable: true });
    const f = network(202);
    const t = transport(f);
    t.hide();
    expect(beacon).not.toHaveBeenCalled(); // nothing queued, nothing sent
    t.add(action(1)); // e.g. LCP and CLS, reported on visibilitychange after the SDK's own listener
    t.add(action(2));
    expect(beacon.mock.calls.map((c) => JSON.parse(c[1]).events.map((e: RumEvent) => e.id))).toEqual([["e1"], ["e2"]]);
    t._hidden = false; // visible again (the SDK resets it on visibilitychange and pageshow)
    t.add(action(3));
    expect(beacon).toHaveBeenCalledTimes(2);
    await vi.advanceTimersByTimeAsync(5000);
    expect(bodies.map((b) => b.events.map((e: RumEvent) => e.id))).toEqual([["e3"]]);
  });

  it("keeps what it could not send for the next page, which sends it", async () => {
    const beacon = vi.fn(() => true);
    Object.defineProperty(navigator, "sendBeacon", { value: beacon, configurable: true });
    const down = transport(network(new TypeError("Failed to fetch")));
    down.add(action(1));
    await down.flush();
    down.add(action(2));
    down.hide(); // the server is failing: no beacon into the void, keep it
    expect(beacon).not.toHaveBeenCalled();

    const f = network(202);
    transport(f); // the next page
    await vi.advanceTimersByTimeAsync(10);
    expect(bodies.flatMap((b) => b.events.map((e: RumEvent) => e.id))).toEqual(["e1", "e2"]);
    await vi.advanceTimersByTimeAsync(10);
    expect(Object.keys(localStorage)).toEqual([]);
  });
});

describe("payload", () => {
  it("validates against rumserver/schemas/beacon.v1.json", async () => {
    vi.useRealTimers();
    const f = network(202);
    const core = new Core({ endpoint: "https://rum.example.com/", key: "pk_x", user: "u-1" }, f);
    const turns: TurnEvent[] = [];
    const turn = new Turn({ traceId: "a".repeat(32), spanId: "b".repeat(16), conversationId: "c1", turnIndex: 0 }, "https://api.example.com/chat", "POST", undefined, (e) => turns.push(e));
    turn.headers(200);
    turn.chunk(new TextEncoder().encode(openai("Hi") + openai(" there")));
    turn.chunk(openai("!", { usage: { completion_tokens: 3, prompt_tokens: 5, prompt_tokens_details: { x: 1 } } }));
    turn.end("completed");
    const empty = new Turn({ traceId: "c".repeat(32), spanId: "d".repeat(16), conversationId: "c1", turnIndex: 1 }, "", "POST", undefined, (e) => turns.push(e));
    empty.end("error", "x".repeat(5000));
    for (const t of turns) core.emit(t);
    core.event("action", { name: "copy", attrs: { n: 1 }, turn_span_id: "b".repeat(16) });
    core.event("feedback", { value: "up", comment: null, turn_span_id: null });
    core.event("vital", { id: "v5-123-456", name: "LCP", value: 1234.5, delta: 1234.5, rating: "good", navigation_type: "navigate" });
    core.event("error", { message: "boom", source: null, lineno: 1, colno: 2, stack: null });
    core.event("page_view", { url: "https://chat.example.com/c/1", referrer: null, route_change: true });
    await core.transport.flush();
    expect(f).toHaveBeenCalledWith("https://rum.example.com/rum/v1/beacon?key=pk_x", expect.anything());
    const body = bodies[0]!;
    expect(body.events.map((e: RumEvent) => e.type)).toEqual(["turn", "turn", "action", "feedback", "vital", "error", "page_view"]);
    expect(validate(body), JSON.stringify(validate.errors)).toBe(true);
    expect(body.user).toEqual({ id: "u-1" });
    expect(body.events[0]).toMatchObject({ output_tokens: 3, tokens_estimated: false, usage: { completion_tokens: 3, prompt_tokens: 5 }, chunks: 2 });
  });
});
