/** fetch: trace headers for propagation targets, and chat turns timed on the page's own
 * reads of the body (see watch). */
import { safe, toUrl } from "../lib/util";
import type { Core } from "../core";
import type { Turn } from "../turn";
import type { ServerTimingEntry } from "../types";

/** The resource entry of this request, once the body has ended: it carries
 * serverTiming when Timing-Allow-Origin lets the page see it (STANDARDS §6.2). */
const resourceTiming = (href: string, since: number): ServerTimingEntry[] => {
  const entries = performance.getEntriesByName(href, "resource") as PerformanceResourceTiming[];
  const e = entries.filter((x) => x.startTime >= since - 1).pop();
  // PerformanceServerTiming has toJSON(): {name, duration, description}, as the payload wants.
  return (e?.serverTiming ?? []) as unknown as ServerTimingEntry[];
};

const isAbort = (e: unknown): boolean => (e as { name?: string } | null)?.name === "AbortError";

export const failure = (e: unknown, traced: boolean): string =>
  // A TypeError from fetch on a request that carried trace headers is most often a
  // preflight the API refused (traceparent/baggage not in Access-Control-Allow-Headers).
  (traced && e instanceof TypeError ? "likely CORS preflight refused the trace headers: " : "") + String(e);

const endWithError = (turn: Turn, e: unknown, traced: boolean): void =>
  isAbort(e) ? turn.end("stopped") : turn.end("error", failure(e, traced));

type Methods = Record<string | symbol, unknown>;

/** Watches the page's reads of the Response's body: each chunk is the turn's as the page
 * gets it. The page keeps the browser's own Response and body (no clone, no copy, no
 * read-ahead, nothing in between): getReader() and async iteration, how pages and the
 * OpenAI and Anthropic clients read, hand out the body's own reader with `read` and
 * `cancel` watched, one promise more a read. What the browser reads itself (pipes, tee,
 * text(), json()...) goes through a stream of ours over such a reader, made then. */
const watch = (res: Response, turn: Turn, done: (outcome: "completed" | "stopped") => void, traced: boolean): void => {
  const body = res.body as ReadableStream<Uint8Array>;
  const getReader = body.getReader;
  // Every read passes here: no allocation, and nothing it throws reaches the page.
  const seen = (r: ReadableStreamReadResult<Uint8Array>): ReadableStreamReadResult<Uint8Array> => {
    try {
      if (r.done) done("completed");
      else turn.chunk(r.value);
    } catch {
      /* measuring must never cost the page its answer */
    }
    return r;
  };
  const failed = (e: unknown): never => {
    safe(endWithError)(turn, e, traced);
    throw e;
  };
  const reader = (): ReadableStreamDefaultReader<Uint8Array> => {
    const r = getReader.call(body) as ReadableStreamDefaultReader<Uint8Array>;
    const { read, cancel } = r;
    r.read = () => read.call(r).then(seen, failed);
    r.cancel = (reason) => (done("stopped"), cancel.call(r, reason)); // the page cancelled: a stop button
    return r;
  };
  // highWaterMark 0: it reads only when the page does, so the times are when the page
  // got each chunk.
  let ours: ReadableStream<Uint8Array> | undefined;
  let read: ReadableStreamDefaultReader<Uint8Array> | undefined;
  const stream = (): Methods =>
    (ours ??= new ReadableStream<Uint8Array>(
      {
        async pull(c) {
          const x = await (read ??= reader()).read();
          if (x.done) c.close();
          else c.enqueue(x.value);
        },
        cancel: (reason) => (read ??= reader()).cancel(reason),
      },
      { highWaterMark: 0 },
    )) as unknown as Methods;
  const b = body as unknown as Methods;
  b.getReader = (o?: { mode?: string }) => (o?.mode ? getReader.call(body, o as { mode: "byob" }) : reader());
  b[Symbol.asyncIterator] = b.values = (o?: { preventCancel?: boolean }) => {
    const r = reader();
    const it = {
      next: () => r.read(),
      // As the browser's: leaving the loop cancels the body (unless preventCancel) and
      // releases the lock.
      return: async (value?: unknown) => (o?.preventCancel || (await r.cancel(value)), r.releaseLock(), { done: true, value }),
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  };
  for (const k of ["pipeThrough", "pipeTo", "tee"]) b[k] = (...a: unknown[]) => (stream()[k] as (...a: unknown[]) => unknown)(...a);
  const m = res as unknown as Methods;
  for (const k of ["arrayBuffer", "blob", "bytes", "json", "text"])
    m[k] = () => (new Response(stream() as unknown as ReadableStream, res) as unknown as Record<string, () => unknown>)[k]!();
  // The browser's clone: this body becomes one branch of a tee, watched as before; the
  // copy is the page's own.
  m.clone = () => {
    const copy = Response.prototype.clone.call(res);
    watch(res, turn, done, traced);
    return copy;
  };
};

const watchResponse = (res: Response, turn: Turn, href: string, since: number, traced: boolean): void => {
  turn.headers(res.status, res.headers.get("server-timing"));
  const done = safe((outcome: "completed" | "stopped") => {
    const fromEntry = resourceTiming(href, since);
    if (fromEntry.length) turn.serverTiming = fromEntry;
    turn.end(outcome);
  });
  if (!res.ok) turn.end("error", `HTTP ${res.status}`);
  else if (res.body) watch(res, turn, done, traced);
  else done("completed");
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
        // Made only for a request that gets trace headers.
        let headers: Headers | undefined;
        const own = (): Headers => (headers ??= new Headers(init?.headers ?? req?.headers));
        const ids = core.prepare(url, method, (name, value) => own().set(name, value), (name) => own().get(name), init?.body);
        turn = ids.turn;
        if (ids.traced) {
          traced = true;
          init = { ...init, headers: own() };
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
      (res) => (safe(watchResponse)(res, t, href, since, traced), res),
      (e: unknown) => {
        safe(endWithError)(t, e, traced);
        throw e;
      },
    );
  };
};
