/** fetch: trace headers for propagation targets, and chat turns timed by wrapping
 * the body's reader. The page gets a Response over the very same chunks (no clone,
 * no copy, no read-ahead), so getReader(), text(), json(), clone() and
 * pipeThrough() behave as before. */
import { safe, toUrl } from "./lib/util";
import type { Core } from "./core";
import type { Turn } from "./turn";
import type { ServerTimingEntry } from "./types";

export const parseServerTiming = (header: string | null): ServerTimingEntry[] =>
  (header ?? "")
    .split(",")
    .filter((part) => part.trim())
    .map((part) => {
      const [name = "", ...params] = part.split(";").map((s) => s.trim());
      const entry: ServerTimingEntry = { name, duration: null, description: "" };
      for (const p of params) {
        const [k, v = ""] = p.split(/=(.*)/s).map((s) => s.trim().replace(/^"|"$/g, ""));
        if (k === "dur" && Number(v) >= 0) entry.duration = Number(v);
        if (k === "desc") entry.description = v;
      }
      return entry;
    });

/** The resource entry of this request, once the body has ended: it carries
 * serverTiming when Timing-Allow-Origin lets the page see it (STANDARDS §6.2). */
const resourceTiming = (href: string, since: number): ServerTimingEntry[] => {
  const entries = performance.getEntriesByName(href, "resource") as PerformanceResourceTiming[];
  const e = entries.filter((x) => x.startTime >= since - 1).pop();
  return (e?.serverTiming ?? []).map((s) => ({ name: s.name, duration: s.duration, description: s.description }));
};

const isAbort = (e: unknown): boolean => (e as { name?: string } | null)?.name === "AbortError";

export const failure = (e: unknown, traced: boolean): string =>
  // A TypeError from fetch on a request that carried trace headers is most often a
  // preflight the API refused (traceparent/baggage not in Access-Control-Allow-Headers).
  (traced && e instanceof TypeError ? "likely CORS preflight refused the trace headers: " : "") + String(e);

export const endWithError = (turn: Turn, e: unknown, traced: boolean): void =>
  isAbort(e) ? turn.end("stopped") : turn.end("error", failure(e, traced));

const wrapBody = (res: Response, turn: Turn, href: string, since: number, traced: boolean): Response => {
  turn.headers(res.status);
  turn.serverTiming = parseServerTiming(res.headers.get("server-timing"));
  const done = safe((outcome: "completed" | "stopped") => {
    const fromEntry = resourceTiming(href, since);
    if (fromEntry.length) turn.serverTiming = fromEntry;
    turn.end(outcome);
  });
  if (!res.ok) {
    turn.end("error", `HTTP ${res.status}`);
    return res;
  }
  if (!res.body) {
    done("completed");
    return res;
  }
  const reader = res.body.getReader();
  // highWaterMark 0: read from the network only when the page reads, so the SDK
  // never buffers ahead and the times are when the page got each chunk.
  const body = new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        let r: ReadableStreamReadResult<Uint8Array>;
        try {
          r = await reader.read();
        } catch (e) {
          safe(endWithError)(turn, e, traced);
          throw e;
        }
        if (r.done) {
          done("completed");
          c.close();
        } else {
          try {
            turn.chunk(r.value);
          } catch {
            /* measuring must never cost the page its answer */
          }
          c.enqueue(r.value);
        }
      },
      cancel(reason) {
        done("stopped"); // the page cancelled its reader: a stop button
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
  const out = new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  // These are read-only getters on the prototype; own properties keep them true.
  for (const k of ["url", "redirected", "type"] as const) Object.defineProperty(out, k, { value: res[k] });
  return out;
};

export const instrumentFetch = (core: Core): void => {
  const original = window.fetch;
  if (!original) return;
  window.fetch = (input: RequestInfo | URL, init?: RequestInit): Promise<Response> => {
    let turn: Turn | undefined;
    let traced = false;
    let href = "";
    const since = performance.now();
    try {
      const req = input instanceof Request ? input : undefined;
      const url = toUrl(req ? req.url : (input as string | URL));
      if (url) {
        href = url.href;
        const method = (init?.method ?? req?.method ?? "GET").toUpperCase();
        const headers = new Headers(init?.headers ?? req?.headers);
        const ids = core.prepare(url, method, (name, value) => headers.set(name, value), (name) => headers.get(name), init?.body);
        turn = ids.turn;
        if (ids.traced) {
          traced = true;
          init = { ...init, headers };
        }
        const signal = init?.signal ?? req?.signal;
        if (turn && signal) {
          const t = turn;
          signal.addEventListener("abort", () => (t.stopRequested = true));
        }
      }
    } catch {
      /* never break the page's request */
    }
    const p = original.call(window, input, init);
    if (!turn) return p;
    const t = turn;
    return p.then(
      (res) => safe(wrapBody)(res, t, href, since, traced) ?? res,
      (e: unknown) => {
        safe(endWithError)(t, e, traced);
        throw e;
      },
    );
  };
};
