/** llmrum browser SDK: `llmrum.init({...})` and the public API (DESIGN §8). What each
 * capture records is in src/capture/. */
import { about, captureActions } from "./capture/actions";
import { captureErrors } from "./capture/errors";
import { instrumentFetch } from "./capture/fetch";
import { capturePageViews } from "./capture/pageviews";
import { captureVitals } from "./capture/vitals";
import { instrumentXHR } from "./capture/xhr";
import { Core, traceparent } from "./core";
import { safe } from "./lib/util";
import { watchLifecycle } from "./lifecycle";
import type { Turn } from "./turn";
import type { Options } from "./types";

export type { Options } from "./types";
export { VERSION } from "./core";

let core: Core | undefined;
/** Add-ons given before init: EventSource, WebSocket, chat text (src/bundles/). */
const addons: ((core: Core) => void)[] = [];

/** Starts the SDK once; later calls are ignored. Never throws. */
export const init = safe((options: Options): void => {
  if (core || typeof window === "undefined") return;
  // The page's fetch as it is before instrumentFetch: the beacons themselves are
  // neither turns nor traced.
  core = new Core({ ...options }, window.fetch.bind(window));
  instrumentFetch(core);
  instrumentXHR(core);
  for (const addon of addons) safe(addon)(core);
  captureActions(core);
  watchLifecycle(core);
  captureErrors(core);
  capturePageViews(core);
  captureVitals(core);
});

/** Adds an add-on: at init, or now when init has run. */
export const _use = (addon: (core: Core) => void): void => {
  if (core) safe(addon)(core);
  else addons.push(addon);
};

/** A user action by code, e.g. `action("copy", {format: "markdown"})`. */
export const action = safe((name: string, attrs: Record<string, string | number | boolean | null> = {}) =>
  core?.event("action", { name, attrs, ...about(core, core.lastSpanId) }),
);

export const feedback = safe((f: { value: "up" | "down" | number; comment?: string; turnSpanId?: string }) =>
  core?.event("feedback", { value: f.value, comment: f.comment ?? null, ...about(core, f.turnSpanId ?? core.lastSpanId) }, true),
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
    traceparent: turn && core ? traceparent(turn.ctx.traceId, turn.ctx.spanId, core.session().sampled) : "",
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
