/** llmrum browser SDK: `llmrum.init({...})` and the public API (DESIGN §8). */
import { onCLS, onFCP, onINP, onLCP, onTTFB, type Metric } from "web-vitals";
import { Core } from "./core";
import { instrumentFetch } from "./capture/fetch";
import { cut, safe } from "./lib/util";
import type { Turn } from "./turn";
import type { Options } from "./types";
import { instrumentXHR } from "./capture/xhr";

export type { Options } from "./types";
export { VERSION } from "./core";

let core: Core | undefined;
/** Add-ons given before init: EventSource, WebSocket, chat text (src/addons/). */
const addons: ((core: Core) => void)[] = [];
const MAX_ERRORS = 50; // a page throwing in a loop must not flood the queue

const lastSpan = (): string | null => core?.lastSpanId ?? null;
/** The turn an action or feedback is about: its span id and its trace id. */
const about = (span: string | null | undefined) => ({ turn_span_id: span ?? null, trace_id: (span && core?.traceOf.get(span)) || null });

const hidden = (): void => {
  if (!core) return;
  // Whatever is still streaming is abandoned: the user left before the answer ended.
  for (const turn of [...core.active]) turn.end("abandoned");
  core.transport.hide();
};

const onClick = (e: Event): void => {
  const el = (e.target as Element | null)?.closest?.("[data-llmrum]");
  const name = el?.getAttribute("data-llmrum");
  if (!core || !name) return;
  const turnSpan = el?.closest("[data-llmrum-turn]")?.getAttribute("data-llmrum-turn") ?? lastSpan();
  if (name === "feedback-up" || name === "feedback-down") {
    core.event("feedback", { value: name === "feedback-up" ? "up" : "down", comment: null, ...about(turnSpan) });
    return;
  }
  if (name === "stop") for (const t of core.active) t.stopRequested = true;
  if (name === "regenerate") core.next.regenerateOf = turnSpan ?? undefined;
  if (name === "edit") core.next.intentCorrection = true;
  core.event("action", { name, attrs: {}, ...about(turnSpan) });
};

const pageView = (routeChange: boolean, referrer: string | null): void =>
  core?.event("page_view", { url: location.href, referrer, route_change: routeChange });

const watchRoutes = (): void => {
  let last = location.href;
  const check = safe(() => {
    if (location.href === last) return;
    const from = last;
    last = location.href;
    pageView(true, from);
  });
  for (const m of ["pushState", "replaceState"] as const) {
    const original = history[m];
    history[m] = function (this: History, ...a: Parameters<History["pushState"]>) {
      const r = original.apply(this, a);
      check();
      return r;
    };
  }
  addEventListener("popstate", check);
  addEventListener("hashchange", check);
};

const watchErrors = (): void => {
  let n = 0;
  const report = safe((message: string, source: string | null, lineno: number | null, colno: number | null, stack: string | null) => {
    if (n++ < MAX_ERRORS) core?.event("error", { message: cut(message, 1024), source, lineno, colno, stack });
  });
  addEventListener("error", (e) => {
    const err = e.error as Error | undefined;
    if (e.message) report(e.message, e.filename || null, e.lineno || null, e.colno || null, err?.stack ?? null);
  });
  addEventListener("unhandledrejection", (e) => {
    const r = e.reason as Error | undefined;
    report(`Unhandled rejection: ${r?.message ?? String(r)}`, null, null, null, r?.stack ?? null);
  });
};

const vital = safe((m: Metric) =>
  core?.event("vital", { id: m.id, name: m.name, value: m.value, delta: m.delta, rating: m.rating, navigation_type: m.navigationType }),
);

/** Starts the SDK once; later calls are ignored. Never throws. */
export const init = safe((options: Options): void => {
  if (core || typeof window === "undefined") return;
  const o = { ...options };
  // The beacon endpoint itself is neither a chat URL nor a trace target.
  const fetchImpl = window.fetch.bind(window);
  core = new Core(o, fetchImpl);
  instrumentFetch(core);
  instrumentXHR(core);
  for (const addon of addons) safe(addon)(core);
  addEventListener("click", safe(onClick), true);
  addEventListener("pagehide", safe(hidden));
  const shown = safe(() => {
    if (core) core.transport._hidden = false;
  });
  addEventListener("pageshow", shown); // back from the back/forward cache
  document.addEventListener(
    "visibilitychange",
    safe(() => (document.visibilityState === "hidden" ? hidden() : shown())),
  );
  if (o.errors !== false) watchErrors();
  if (o.pageViews !== false) {
    pageView(false, document.referrer || null);
    watchRoutes();
  }
  if (o.vitals !== false) for (const on of [onCLS, onFCP, onINP, onLCP, onTTFB]) on(vital);
});

/** Adds an add-on: at init, or now when init has run. */
export const _use = (addon: (core: Core) => void): void => {
  if (core) safe(addon)(core);
  else addons.push(addon);
};

/** A user action by code, e.g. `action("copy", {format: "markdown"})`. */
export const action = safe((name: string, attrs: Record<string, string | number | boolean | null> = {}) =>
  core?.event("action", { name, attrs, ...about(lastSpan()) }),
);

export const feedback = safe((f: { value: "up" | "down" | number; comment?: string; turnSpanId?: string }) =>
  core?.event("feedback", { value: f.value, comment: f.comment ?? null, ...about(f.turnSpanId ?? lastSpan()) }, true),
);

/** Starts a new conversation: turn_index counts from 0 again. */
export const setConversation = safe((id: string) => {
  if (!core) return;
  core.conversationId = id;
  core.turnIndex = 0;
});

export const setUser = safe((id: string | null) => {
  if (core) core.userId = id ?? undefined;
});

/** A turn over a transport the SDK cannot see (WebSocket, custom): feed it what
 * arrives, then end it. Its trace ids are in `traceparent` if you want to send them. */
export const startTurn = (opts: { url?: string; method?: string; prompt?: string } = {}) => {
  const turn: Turn | undefined = safe(() => core?.startTurn(opts.url ?? "", opts.method ?? "WS", opts.prompt))();
  const call = <A extends unknown[]>(fn: (t: Turn, ...a: A) => void) => safe((...a: A) => turn && fn(turn, ...a));
  return {
    traceparent: turn && core ? `00-${turn.ctx.traceId}-${turn.ctx.spanId}-${core.session().sampled ? "01" : "00"}` : "",
    headers: call((t, status: number) => t.headers(status)),
    /** A message or chunk as received (SSE/JSON text or bytes): parsed like a stream. */
    chunk: call((t, data: string | Uint8Array) => t.chunk(data)),
    /** A token you parsed yourself. */
    token: call((t, text = " ") => t.chunk(`data: ${JSON.stringify({ choices: [{ delta: { content: text } }] })}\n\n`)),
    end: call((t, outcome: "completed" | "stopped" | "error" = "completed", error?: string) => t.end(outcome, error)),
  };
};

/** Sends what is queued now (keepalive fetch). */
export const flush = (): Promise<void> => core?.transport.flush().catch(() => undefined) ?? Promise.resolve();
