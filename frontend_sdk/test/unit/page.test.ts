/** What the core bundle records of the page besides turns: markup actions, page views and
 * errors (src/capture/), and what the page hiding does (src/lifecycle.ts). */
import { afterEach, describe, expect, it, vi } from "vitest";
import { captureActions } from "../../src/capture/actions";
import { captureErrors } from "../../src/capture/errors";
import { capturePageViews } from "../../src/capture/pageviews";
import { Core } from "../../src/core";
import { watchLifecycle } from "../../src/lifecycle";
import type { Options, RumEvent } from "../../src/types";

let events: RumEvent[];

/** A core whose events land in `events`. The window keeps the listeners of earlier
 * tests' cores; each of those records into its own list. */
const recording = (o: Partial<Options> = {}): Core => {
  const list: RumEvent[] = (events = []);
  const core = new Core({ endpoint: "https://rum.example.com", key: "pk_test", ...o }, vi.fn() as unknown as typeof fetch);
  core.emit = (e) => void list.push(e);
  return core;
};

const ofType = <T extends RumEvent["type"]>(type: T) =>
  events.filter((e): e is Extract<RumEvent, { type: T }> => e.type === type);

const click = (selector: string): void => (document.querySelector(selector) as HTMLElement).click();

describe("markup actions", () => {
  it("are about the turn data-llmrum-turn names, else the last turn", () => {
    const core = recording();
    captureActions(core);
    const first = core.startTurn("/chat", "POST");
    const last = core.startTurn("/chat", "POST");
    document.body.innerHTML = `
      <div data-llmrum-turn="${first.ctx.spanId}"><button data-llmrum="feedback-up"><b>up</b></button></div>
      <button data-llmrum="copy">Copy</button>`;
    click("b"); // inside the marked button
    click('[data-llmrum="copy"]');
    expect(ofType("feedback")).toEqual([
      expect.objectContaining({ value: "up", comment: null, turn_span_id: first.ctx.spanId, trace_id: first.ctx.traceId }),
    ]);
    expect(ofType("action")).toEqual([
      expect.objectContaining({ name: "copy", attrs: {}, turn_span_id: last.ctx.spanId, trace_id: last.ctx.traceId }),
    ]);
  });

  it("stop ends the answers still streaming as stopped; regenerate and edit mark the next turn", () => {
    const core = recording();
    captureActions(core);
    const streaming = core.startTurn("/chat", "POST");
    document.body.innerHTML = ["stop", "regenerate", "edit"].map((a) => `<button data-llmrum="${a}"></button>`).join("");
    for (const a of ["stop", "regenerate", "edit"]) click(`[data-llmrum="${a}"]`);
    streaming.end("completed");
    core.startTurn("/chat", "POST").end("completed");
    expect(ofType("action").map((a) => a.name)).toEqual(["stop", "regenerate", "edit"]);
    const [stopped, next] = ofType("turn");
    expect(stopped).toMatchObject({ span_id: streaming.ctx.spanId, outcome: "stopped", regenerate_of: null });
    expect(next).toMatchObject({ outcome: "completed", regenerate_of: streaming.ctx.spanId, intent_correction: true });
  });
});

describe("page views", () => {
  const { pushState, replaceState } = history;
  afterEach(() => Object.assign(history, { pushState, replaceState }));

  it("the page as it loads, then each route change with the URL it left", () => {
    history.replaceState(null, "", "/start");
    capturePageViews(recording());
    history.pushState(null, "", "/chat/1");
    history.replaceState(null, "", "/chat/1"); // the same URL: no change
    history.replaceState(null, "", "/chat/2");
    const at = (path: string) => new URL(path, location.href).href;
    expect(ofType("page_view").map((v) => [v.url, v.referrer, v.route_change])).toEqual([
      [at("/start"), null, false],
      [at("/chat/1"), at("/start"), true],
      [at("/chat/2"), at("/chat/1"), true],
    ]);
  });

  it("none with pageViews: false", () => {
    capturePageViews(recording({ pageViews: false }));
    history.pushState(null, "", "/elsewhere");
    expect(events).toEqual([]);
  });
});

describe("errors", () => {
  it("uncaught errors and rejections, each message cut to 1,024, at most 50 a page", () => {
    captureErrors(recording());
    const long = "x".repeat(2000);
    dispatchEvent(new ErrorEvent("error", { message: long, filename: "https://app.example/a.js", lineno: 3, colno: 4, error: new Error("boom") }));
    dispatchEvent(new Event("error")); // no message (a resource that failed to load): not a page error
    dispatchEvent(Object.assign(new Event("unhandledrejection"), { reason: new TypeError("nope") }));
    for (let i = 0; i < 60; i++) dispatchEvent(new ErrorEvent("error", { message: `again ${i}` }));
    const errors = ofType("error");
    expect(errors).toHaveLength(50);
    expect(errors[0]).toMatchObject({ message: long.slice(0, 1024), source: "https://app.example/a.js", lineno: 3, colno: 4 });
    expect(errors[0]!.stack).toContain("boom");
    expect(errors[1]).toMatchObject({ message: "Unhandled rejection: nope", source: null, lineno: null, colno: null });
    expect(errors[2]).toMatchObject({ message: "again 0", source: null, stack: null });
  });

  it("none with errors: false", () => {
    captureErrors(recording({ errors: false }));
    dispatchEvent(new ErrorEvent("error", { message: "boom" }));
    expect(events).toEqual([]);
  });
});

describe("the page hiding", () => {
  it("abandons the answers still streaming and beacons the queue; showing again ends that", () => {
    const core = recording();
    watchLifecycle(core);
    const hide = vi.spyOn(core.transport, "hide");
    const streaming = core.startTurn("/chat", "POST");
    const done = core.startTurn("/chat", "POST");
    done.end("completed");
    dispatchEvent(new Event("pagehide"));
    expect(ofType("turn").map((t) => [t.span_id, t.outcome])).toEqual([
      [done.ctx.spanId, "completed"],
      [streaming.ctx.spanId, "abandoned"],
    ]);
    expect(hide).toHaveBeenCalledOnce();
    expect(core.transport._hidden).toBe(true);
    dispatchEvent(new Event("pageshow")); // back from the back/forward cache
    expect(core.transport._hidden).toBe(false);
  });

  it("and so does the document becoming hidden, and visible again", () => {
    const core = recording();
    watchLifecycle(core);
    const streaming = core.startTurn("/chat", "POST");
    const state = vi.spyOn(document, "visibilityState", "get").mockReturnValue("hidden");
    document.dispatchEvent(new Event("visibilitychange"));
    expect(ofType("turn")).toEqual([expect.objectContaining({ span_id: streaming.ctx.spanId, outcome: "abandoned" })]);
    expect(core.transport._hidden).toBe(true);
    state.mockReturnValue("visible");
    document.dispatchEvent(new Event("visibilitychange"));
    expect(core.transport._hidden).toBe(false);
  });
});
