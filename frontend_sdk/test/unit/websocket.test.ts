import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { Core } from "../../src/core";
import type { TurnEvent, Options } from "../../src/types";
import { instrumentWebSocket } from "../../src/capture/websocket";
import { fakeClock } from "./helpers";

const WS = "wss://api.example.com/chat?token=secret";

/** A stand-in for the browser's WebSocket: the test delivers messages by hand. */
class FakeWebSocket extends EventTarget {
  static last: FakeWebSocket;
  sent: unknown[] = [];
  onmessage: ((e: MessageEvent) => void) | null = null;
  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {
    super();
    FakeWebSocket.last = this;
  }
  send(data: unknown): void {
    if (data === "boom") throw new DOMException("not open", "InvalidStateError");
    this.sent.push(data);
  }
  close(code = 1000): void {
    this.dispatchEvent(new CloseEvent("close", { code }));
  }
  deliver(data: unknown): MessageEvent {
    const e = new MessageEvent("message", { data: typeof data === "string" ? data : JSON.stringify(data) });
    this.dispatchEvent(e);
    return e;
  }
}

const delta = (content: string) => ({ type: "delta", content, choices: [{ delta: { content } }] });

let turns: TurnEvent[];
let core: Core;
let clock: ReturnType<typeof fakeClock>;
const original = window.WebSocket;

const setup = (o: Record<string, unknown> = {}) => {
  core = new Core(
    {
      endpoint: "https://rum.example.com",
      key: "pk_test",
      webSocketTurns: { match: (url) => url.startsWith("wss://api.example.com/chat"), isEnd: (d: string) => d.includes('"done"') },
      ...(o as Partial<Options>),
    },
    vi.fn() as unknown as typeof fetch,
  );
  vi.spyOn(core, "emit").mockImplementation((e) => void (e.type === "turn" && turns.push(e)));
  instrumentWebSocket(core);
};

beforeEach(() => {
  turns = [];
  clock = fakeClock();
  window.WebSocket = FakeWebSocket as unknown as typeof WebSocket;
});
afterEach(() => {
  window.WebSocket = original;
});

describe("WebSocket turns", () => {
  it("are off unless webSocketTurns is given", () => {
    setup({ webSocketTurns: undefined });
    expect(window.WebSocket).toBe(FakeWebSocket);
  });

  it("pass every message through unchanged, and time a turn from send to isEnd", () => {
    setup();
    const ws = new WebSocket(WS, "chat");
    const fake = FakeWebSocket.last;
    expect(ws).toBeInstanceOf(FakeWebSocket);
    expect([fake.url, fake.protocols]).toEqual([WS, "chat"]);
    const got: unknown[] = [];
    ws.onmessage = (e) => got.push(e);
    ws.addEventListener("message", (e) => got.push(e.data));
    fake.deliver({ type: "hello" }); // before any send: not a turn
    const t0 = clock.get();
    ws.send('{"prompt":"hi"}');
    expect(fake.sent).toEqual(['{"prompt":"hi"}']);
    clock.tick(300);
    const first = fake.deliver(delta("Hello"));
    for (const w of [" big", " world"]) {
      clock.tick(40);
      fake.deliver(delta(w));
    }
    clock.tick(5);
    fake.deliver({ type: "done", usage: { completion_tokens: 3 } });
    fake.deliver(delta("late")); // after the end: no turn
    expect(got).toContain(first);
    expect(got).toContain(first.data);
    expect(got.length).toBe(12);
    expect(turns).toHaveLength(1);
    expect(turns[0]).toMatchObject({
      url: "wss://api.example.com/chat",
      method: "WS",
      t_send: t0,
      t_first_token: t0 + 300,
      t_end: t0 + 385,
      tbt_gaps: [40, 40],
      output_tokens: 3,
      tokens_estimated: false,
      outcome: "completed",
    });
    expect(turns[0]!.trace_id).toMatch(/^[0-9a-f]{32}$/);
    ws.close();
    expect(turns).toHaveLength(1);
  });

  it("is stopped by close(), an error when the server closes mid-answer, and never breaks send", () => {
    setup();
    const ws = new WebSocket(WS);
    ws.send("a");
    FakeWebSocket.last.deliver(delta("x"));
    ws.send("stop"); // a message while the answer streams belongs to that turn
    ws.close();
    const ws2 = new WebSocket(WS);
    ws2.send("b");
    FakeWebSocket.last.dispatchEvent(new CloseEvent("close", { code: 1011 }));
    expect(() => ws2.send("boom")).toThrow("not open");
    expect(turns.map((t) => [t.outcome, t.error])).toEqual([
      ["stopped", null],
      ["error", "WebSocket closed (1011)"],
    ]);
  });

  it("leaves other sockets alone", () => {
    setup();
    const ws = new WebSocket("wss://other.example.com/live");
    ws.send("x");
    FakeWebSocket.last.deliver(delta("y"));
    ws.close();
    expect(turns).toEqual([]);
  });
});
